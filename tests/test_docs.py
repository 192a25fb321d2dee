"""Documentation tested like code: every Python recipe runs against a real sink."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, cat_json

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # stdlib HTTPHandler
RECIPES = ROOT / "docs" / "recipes.md"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_every_python_recipe_delivers(start_sink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sink = start_sink()
    address = sink.url.split("://")[1]
    blocks = python_blocks(RECIPES)
    assert len(blocks) == 3
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        for block in blocks:
            code = block.replace("127.0.0.1:8000", address).replace("/tmp/archiver-recipe-buffer", str(tmp_path / "buf"))
            exec(compile(code, str(RECIPES), "exec"), {})
            for handler in root.handlers[:]:
                if handler not in saved[0]:
                    handler.close()
                    root.removeHandler(handler)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        shutil.rmtree(tmp_path / "buf", ignore_errors=True)
    assert sink.stop() == 0
    messages = {(r["logger"], r["message"]) for r in cat_json(sink.data_dir)}
    assert messages == {
        ("recipes.batched", "user alice logged in"),
        ("recipes.formatting", "payment 17 failed"),
        ("recipes.stdlib", "disk /var at 91%"),
    }

