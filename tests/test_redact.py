"""redact(): no capability, URL password or secret query value survives it, whatever surrounds
it, and it cuts only once."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.common.redaction import redact

CAP = "URI:DIR2:gqzl4y3cimw6k2opcnnhtwn4ry:tu4dc7nbfssjmv3n6vfqvo4upwjzy3mfzgeahbyc3tvssbrgrl3q"
CUT = "URI:DIR2:gqzl…"


def test_a_cap_followed_by_an_ellipsis_is_cut() -> None:
    assert redact(f"see {CAP}… and {CAP}") == f"see {CUT}… and {CUT}"


def test_a_percent_encoded_cap_is_cut() -> None:
    for url in (f"tahoe://127.0.0.1:3456/{quote(CAP, safe='')}/app", f"/uri/{quote(CAP, safe='').replace('%3A', '%3a')}"):
        assert "gqzl4y3c" not in redact(url) and "tu4dc7nb" not in redact(url), redact(url)
    assert redact(f"/uri/{quote(CAP, safe='')}/app") == "/uri/URI%3ADIR2%3Agqzl…/app"


separators = st.sampled_from([":", "%3A", "%3a"])
kinds = st.sampled_from(["DIR2", "DIR2-RO", "DIR2-CHK", "CHK", "LIT", "MDMF", "SSK-RO"])
# Longer than the four characters redact() keeps, so a cut cap can no longer be found whole.
bodies = st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567:", min_size=5, max_size=30)
caps = st.builds(lambda sep, kind, body: f"URI:{kind}:{body}".replace(":", sep), separators, kinds, bodies)
fillers = st.lists(st.sampled_from(["…", ":", "%3A", "URI", "URI:LIT:", "ab", " ", "/", "-"]) | st.text(max_size=3),
                   max_size=3).map("".join)


@given(st.lists(st.tuples(fillers, caps), max_size=4), fillers)
@settings(max_examples=500)
def test_redact_cuts_every_cap_and_only_once(pieces: list[tuple[str, str]], tail: str) -> None:
    text = "".join(filler + cap for filler, cap in pieces) + tail
    redacted = redact(text)
    assert not any(cap in redacted for _, cap in pieces)
    assert redact(redacted) == redacted


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sftp://user:pw@host/archive", "sftp://user:***@host/archive"),
        ("ftp://u:p@h", "ftp://u:***@h"),
        ("s3://AKIAEXAMPLE:wJalr/XUtn+FEMI:K7@bucket/dir", "s3://AKIAEXAMPLE:***@bucket/dir"),
        ("ftp://u:p%40ss@h:21/x", "ftp://u:***@h:21/x"),
        ("webdav://h/x?password=hunter2&user=bob", "webdav://h/x?password=***&user=bob"),
        ("s3://bucket/dir?access_key=AK&secret_key=SK&Token=T&region=eu", "s3://bucket/dir?access_key=***&secret_key=***&Token=***&region=eu"),
        ("azure://c/x?sv=2020&sig=ab%2Fcd&api-key=k", "azure://c/x?sv=2020&sig=***&api-key=***"),
        ("osfs:///var/lib/archive", "osfs:///var/lib/archive"),
        ("tahoe://127.0.0.1:3456", "tahoe://127.0.0.1:3456"),
        (f"tahoe://127.0.0.1:3456/{CAP}/app", f"tahoe://127.0.0.1:3456/{CUT}/app"),
    ],
)
def test_store_url_secrets_are_cut(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert redact(f"cannot open store {url}: refused") == f"cannot open store {shown}: refused"
    assert redact(shown) == shown


schemes = st.sampled_from(["ftp", "sftp", "s3", "webdav", "ssh", "dropbox"])
secrets = st.text(alphabet="abcXYZ0189+/:=%-_.~!$", max_size=20).map(lambda tail: "S3CRET" + tail)
names = st.sampled_from(["password", "passwd", "secret", "token", "access_key", "aws_secret_access_key", "sig", "apiKey"])


@given(schemes, st.text(alphabet="abc123._-", max_size=8), secrets, st.sampled_from(["h", "127.0.0.1:21", "bucket"]),
       st.sampled_from(["", "/", "/a/b"]), fillers)
@settings(max_examples=300)
def test_no_url_password_survives(scheme: str, user: str, secret: str, host: str, path: str, tail: str) -> None:
    text = f"{scheme}://{user}:{secret}@{host}{path}{tail}"
    assert "S3CRET" not in redact(text)
    assert redact(redact(text)) == redact(text)


@given(names, st.text(alphabet="abcXYZ0189+/:%-_.~", max_size=20).map(lambda tail: "S3CRET" + tail), st.booleans())
def test_no_secret_query_value_survives(name: str, secret: str, first: bool) -> None:
    text = f"s3://bucket/x?{'' if first else 'region=eu&'}{name}={secret}&n=1 and more"
    assert "S3CRET" not in redact(text)
    assert redact(text).endswith("&n=1 and more")
