"""Retention: the pure policy (property-tested) and its config."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.app.config import ConfigError, load_config
from archiver.format.manifest import STATES
from archiver.ship.retention import Candidate, RetentionPolicy, to_forget

DAY = 86400.0
NOW = 1_800_000_000.0
STREAMS = ("app", "audit", "tcp")

keeps = st.one_of(st.just(math.inf), st.floats(min_value=1, max_value=1000 * DAY))
candidates = st.lists(
    st.builds(
        Candidate,
        id=st.text("0123456789abcdef", min_size=4, max_size=4),
        stream=st.sampled_from(STREAMS),
        last_ts=st.floats(min_value=NOW - 2000 * DAY, max_value=NOW + DAY),
        state=st.sampled_from(STATES),
    ),
    max_size=40,
    unique_by=lambda candidate: candidate.id,
)
policies = st.builds(
    RetentionPolicy,
    keep=keeps,
    streams=st.lists(st.tuples(st.sampled_from(STREAMS), keeps), unique_by=lambda pair: pair[0]).map(tuple),
    min_segments=st.integers(0, 5),
)


@settings(max_examples=300)
@given(candidates, policies)
def test_the_policy_drops_exactly_what_is_older_than_its_streams_keep_beyond_the_floor(
    segments: list[Candidate], policy: RetentionPolicy
) -> None:
    decisions = to_forget(segments, policy, NOW)
    forgotten = {decision.segment.id for decision in decisions}
    assert len(forgotten) == len(decisions)
    for stream in STREAMS:
        kept = [s for s in segments if s.stream == stream and s.state != "forgotten"]
        newest = sorted(kept, key=lambda s: (s.last_ts, s.id), reverse=True)
        floor = newest[: policy.min_segments]
        assert not forgotten & {s.id for s in floor}, "the floor holds"
        keep, setting = policy.keep_for(stream)
        if stream in dict(policy.streams):
            assert keep == dict(policy.streams)[stream], "the stream's own keep wins"
        for segment in newest[policy.min_segments :]:
            assert (segment.id in forgotten) == (NOW - segment.last_ts > keep), "only, and all, older than keep"
    for decision in decisions:
        assert decision.segment.state != "forgotten"
        assert decision.reason.endswith(f"({policy.keep_for(decision.segment.stream)[1]})")


def test_the_default_keeps_everything_and_the_reason_says_why() -> None:
    old = [Candidate(f"s{n}", "app", NOW - 5000 * DAY + n, "pruned") for n in range(3)]
    assert to_forget(old, RetentionPolicy(), NOW) == []
    [first, second] = to_forget(old, RetentionPolicy(keep=400 * DAY, streams=(("audit", 30 * DAY),)), NOW)
    assert (first.segment.id, second.segment.id) == ("s0", "s1")  # oldest first; s2 is the floor
    assert first.reason == "last record 2013-05-08T08:00:00.000000Z is older than 400d (retention.keep)"


# -- config ------------------------------------------------------------------------------------


def test_retention_config(tmp_path: Path) -> None:
    assert load_config().retention.keep == math.inf and load_config().retention.min_segments == 1
    path = tmp_path / "a.toml"
    path.write_text('[retention]\nkeep = "400d"\nstreams = ["app=30d", "audit = forever"]\nmin_segments = 3\n')
    retention = load_config(path).retention
    assert retention.keep == 400 * DAY and retention.min_segments == 3
    assert retention.streams == (("app", 30 * DAY), ("audit", math.inf))
    env = load_config(env={"ARCHIVER_RETENTION_STREAMS": "app=12h", "ARCHIVER_RETENTION_KEEP": "forever"}).retention
    assert env.streams == (("app", 43200.0),) and env.keep == math.inf


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('keep = "soon"', "retention.keep = 'soon'"),
        ('keep = "0d"', "retention.keep must be positive"),
        ('streams = ["app"]', "'app' is not stream=keep"),
        ('streams = ["bad name=1d"]', "is not stream=keep"),
        ('streams = ["app=1d", "app=2d"]', "a stream is named twice"),
        ('streams = ["app=0s"]', "retention.streams keeps must be positive"),
        ("min_segments = -1", "retention.min_segments must be 0 or more"),
    ],
)
def test_retention_config_errors(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "a.toml"
    path.write_text(f"[retention]\n{toml}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)
