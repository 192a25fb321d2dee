"""PyFilesystem2's own conformance suite, run against TahoeFS on a real one-node grid."""

from __future__ import annotations

import unittest

import pytest
from fs.test import FSTestCases

from archiver.app.grid import LocalGrid
from archiver.store.tahoe import TahoeFS


class TestTahoeFSConformance(FSTestCases, unittest.TestCase):
    grid: LocalGrid
    # fs 2.4.16's cases call unittest's old alias, which Python 3.12 removed.
    assertRaisesRegexp = unittest.TestCase.assertRaisesRegex

    @pytest.fixture(autouse=True)
    def _use_grid(self, grid1: LocalGrid) -> None:
        type(self).grid = grid1

    def make_fs(self) -> TahoeFS:
        return self.grid.create_root()  # a fresh directory on the grid for every case
