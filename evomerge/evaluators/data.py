"""Loading evaluation records from a local JSONL/JSON file or a Hugging Face dataset (`hf:REPO[:CONFIG]:SPLIT`)."""

from __future__ import annotations

import json
from typing import Any

from evomerge.core.errors import UserError, reason
from evomerge.core.resources import resolve_path


def load_records(spec: str, where: str) -> list[dict[str, Any]]:
    if spec.startswith("hf:"):
        parts = spec[3:].split(":")
        if len(parts) not in (2, 3):
            raise UserError(f"write a hub dataset as hf:REPO:SPLIT or hf:REPO:CONFIG:SPLIT, got {spec!r}", where)
        repo, config, split = (parts[0], None, parts[1]) if len(parts) == 2 else parts
        try:
            import datasets

            return [dict(r) for r in datasets.load_dataset(repo, config, split=split)]
        except Exception as e:
            raise UserError(f"cannot load dataset {repo}: {reason(e, 160, True)}", where) from None
    path = resolve_path(spec)
    if not path.is_file():
        raise UserError(f"no such data file {spec}", where)
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            data = json.loads(text)
            return list(data) if isinstance(data, list) else list(data["data"])
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{spec} is not valid JSON lines: {e}", where) from None


def digest(*parts: Any) -> str:
    """A short content hash of loaded evaluation data (records, text, image bytes), so that a resumed search can
    tell that its fitness data changed (an edited file, another hub revision) even where the name did not."""
    import hashlib

    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes):
            h.update(part)
        else:
            h.update(json.dumps(part, sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def require_fields(records: list[dict[str, Any]], fields: list[str], spec: str, where: str) -> None:
    if not records:
        raise UserError(f"{spec} holds no records", where)
    for f in fields:
        if f not in records[0]:
            raise UserError(f"records in {spec} have no field {f!r} (fields: {', '.join(records[0])})", where)
