"""Lines of an imported file as canonical records: JSON lines (the JSON mapping every client
gets), syslog, or plain text with continuation lines joined. Pure: the caller reads the file
and passes whole lines; ``reference`` is the file's mtime (it places year-less dates, and
dates a text line that has none)."""

from __future__ import annotations

from typing import Any

from archiver.common.units import format_ts
from archiver.format.record import SOURCE_IMPORT, Context, Rejected
from archiver.ingest.decode.jsonbody import decode_lines
from archiver.ingest.decode.levels import normalize_level
from archiver.ingest.decode.result import Decoded
from archiver.ingest.decode.syslog import looks_like_syslog, parse_syslog
from archiver.ingest.decode.textlog import join_text

FORMATS = ("jsonl", "syslog", "text")
FILE_FIELD = "import_file"  # in every imported record's fields: the file it came from


def sniff_format(first_line: bytes) -> str:
    """The format of a file, from its first non-blank line."""
    text = first_line.strip()
    if text.startswith(b"{"):
        return "jsonl"
    if looks_like_syslog(text.decode("utf-8", "replace")):
        return "syslog"
    return "text"


class LineDecoder:
    """Decodes one file's lines, chunk by chunk, in order."""

    def __init__(self, kind: str, file_name: str, ctx: Context, reference: float) -> None:
        if kind not in FORMATS:
            raise ValueError(f"unknown format {kind!r}; one of {FORMATS}")
        self.kind = kind
        self.file_name = file_name
        self.ctx = ctx
        self.reference = reference
        self._last_ts = format_ts(reference)  # a text line with no time of its own: the one before it

    def decode(self, lines: list[bytes], final: bool) -> tuple[Decoded, int]:
        """Records from whole lines (without their newlines), and how many lines they used:
        a text record's continuation may still be unread unless ``final``."""
        if self.kind == "jsonl":
            decoded = decode_lines(b"\n".join(lines), self.ctx, SOURCE_IMPORT)
            for record in decoded.records:
                record["fields"][FILE_FIELD] = self.file_name
            return decoded, len(lines)
        if self.kind == "syslog":
            return self._syslog(lines), len(lines)
        return self._text(lines, final)

    def _record(self, ts: str, level: Any, logger: str | None, message: str, fields: dict[str, Any]) -> dict[str, Any]:
        fields[FILE_FIELD] = self.file_name
        return {"ts": ts, "level": level, "logger": logger, "message": message, "stream": self.ctx.stream,
                "source": SOURCE_IMPORT, "peer": None, "received": self.ctx.received_ts, "fields": fields}

    def _syslog(self, lines: list[bytes]) -> Decoded:
        decoded = Decoded(SOURCE_IMPORT)
        for line in lines:
            if not line.strip():
                continue
            try:
                parsed = parse_syslog(line.decode("utf-8").rstrip("\r"), self.reference)
            except UnicodeDecodeError as err:
                decoded.rejected.append(Rejected(f"line is not valid UTF-8 (byte {err.start})", line))
                continue
            if parsed is None:
                decoded.rejected.append(Rejected("not a syslog line (RFC 5424 or RFC 3164)", line))
                continue
            ts, fields, message = parsed
            level = normalize_level(fields["severity"]) if "severity" in fields else None
            decoded.records.append(self._record(ts, level, fields.get("app"), message, fields))
        return decoded

    def _text(self, lines: list[bytes], final: bool) -> tuple[Decoded, int]:
        decoded = Decoded(SOURCE_IMPORT)
        texts = [line.decode("utf-8", "replace").rstrip("\r") for line in lines]
        joined, used = join_text(texts, self.reference, final)
        for record in joined:
            if record.ts is not None:
                self._last_ts = record.ts
            if record.message.strip():
                decoded.records.append(self._record(record.ts or self._last_ts, normalize_level(record.level), None,
                                                    record.message, {}))
        return decoded, used
