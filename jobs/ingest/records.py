"""Plain-Python validation and normalisation of one raw record (no Spark).

Every format is turned into JSON records first, so one set of rules decides what is a valid catalog
item or interaction and, when not, which quarantine reason applies.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
import unicodedata
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from jobs.ingest.lcrec import split_category_path


class Reason(StrEnum):
    MALFORMED_RECORD = "malformed_record"  # not a JSON object / unreadable line
    MISSING_ITEM_ID = "missing_item_id"
    MISSING_USER_ID = "missing_user_id"
    WRONG_TYPE = "wrong_type"  # a field holds a value of the wrong kind (detail names the field)
    UNPARSABLE_TIMESTAMP = "unparsable_timestamp"
    NO_USABLE_TEXT = "no_usable_text"
    DUPLICATE_ITEM_ID = "duplicate_item_id"  # superseded by a later (or tie-broken) row of the same id
    UNKNOWN_ITEM = "unknown_item"  # interaction on an item the curated catalog does not have


class Rejected(Exception):
    def __init__(self, reason: Reason, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_TAG = re.compile(r"<[^>]{0,500}>")
_SPACE = re.compile(r"\s+")


def normalize_text(value: Any, *, strip_html: bool = True, field: str = "text") -> str | None:
    """Unicode NFKC, HTML entities and tags removed, control characters and U+FFFD dropped, whitespace collapsed."""
    if value is None:
        return None
    if not isinstance(value, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        else:
            raise Rejected(Reason.WRONG_TYPE, f"{field} must be a string, got {type(value).__name__}")
    text = unicodedata.normalize("NFKC", value)
    if strip_html:
        text = html.unescape(_TAG.sub(" ", text))
    text = "".join(ch if (ch.isprintable() or ch.isspace()) and ch != "\ufffd" else " " for ch in text)
    text = _SPACE.sub(" ", text).strip()
    return text or None


def normalize_id(value: Any, *, reason: Reason) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise Rejected(reason, "null")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Rejected(Reason.WRONG_TYPE, f"id must be a string or integer, got {type(value).__name__}")
    text = str(value).strip()
    if not text:
        raise Rejected(reason, "empty")
    return text


def parse_timestamp(value: Any, *, field: str) -> datetime | None:
    """ISO-8601 strings (naive = UTC) or epoch seconds/milliseconds -> aware UTC datetime."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            raise ValueError("boolean")
        if isinstance(value, (int, float)) or (isinstance(value, str) and re.fullmatch(r"\s*-?\d+(\.\d+)?\s*", value)):
            number = float(value)
            if not math.isfinite(number):
                raise ValueError("not finite")
            seconds = number / 1000.0 if abs(number) >= 1e11 else number  # epoch ms vs s
            return datetime.fromtimestamp(seconds, tz=timezone.utc)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError, OSError) as exc:
        raise Rejected(Reason.UNPARSABLE_TIMESTAMP, f"{field}={value!r}: {exc}") from None
    raise Rejected(Reason.UNPARSABLE_TIMESTAMP, f"{field}={value!r}")


def parse_price(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise Rejected(Reason.WRONG_TYPE, "price must be a number, got bool")
    try:
        price = float(str(value).strip().lstrip("$").replace(",", "")) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise Rejected(Reason.WRONG_TYPE, f"price must be a number, got {value!r}") from None
    if not math.isfinite(price) or price < 0:
        raise Rejected(Reason.WRONG_TYPE, f"price must be a finite non-negative number, got {value!r}")
    return price


def parse_category_path(value: Any, *, separator: str, strip_html: bool) -> list[str] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                value = [stripped]
        elif separator == "lcrec":
            value = split_category_path(stripped) or []
        else:
            value = stripped.split(separator)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Rejected(Reason.WRONG_TYPE, f"category_path must be a list of strings, got {value!r}"[:200])
    parts = [normalize_text(v, strip_html=strip_html, field="category_path") for v in value]
    return [p for p in parts if p] or None


def parse_attributes(value: Any, *, strip_html: bool) -> list[tuple[str, str]] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise Rejected(Reason.WRONG_TYPE, "attributes must be a JSON object") from None
    if isinstance(value, list) and all(isinstance(kv, (list, tuple)) and len(kv) == 2 for kv in value):
        value = dict(value)  # Spark/Arrow map written as key-value pairs
    if not isinstance(value, dict):
        raise Rejected(Reason.WRONG_TYPE, f"attributes must be an object, got {type(value).__name__}")
    out = []
    for key in sorted(value, key=str):
        val = value[key]
        text = normalize_text(val if isinstance(val, str) else json.dumps(val, sort_keys=True), strip_html=strip_html)
        if text is not None:
            out.append((normalize_text(str(key), strip_html=strip_html) or str(key), text))
    return out or None


def text_fingerprint(item: dict[str, Any]) -> str:
    """Hash of the text fields (what an embedding sees): unchanged text means unchanged item semantics."""
    payload = [item.get(k) for k in ("title", "description", "brand", "category_path", "attributes")]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()[:24]


def load_record(raw: str | None) -> dict[str, Any]:
    if raw is None:
        raise Rejected(Reason.MALFORMED_RECORD, "unreadable")
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise Rejected(Reason.MALFORMED_RECORD, f"invalid JSON: {exc.msg}") from None
    if not isinstance(record, dict):
        raise Rejected(Reason.MALFORMED_RECORD, f"expected a JSON object, got {type(record).__name__}")
    return record


def validate_catalog_record(raw: str | None, *, usable_text_fields, strip_html: bool, category_separator: str) -> dict[str, Any]:
    record = load_record(raw)
    item = {
        "item_id": normalize_id(record.get("item_id"), reason=Reason.MISSING_ITEM_ID),
        "title": normalize_text(record.get("title"), strip_html=strip_html, field="title"),
        "description": normalize_text(record.get("description"), strip_html=strip_html, field="description"),
        "brand": normalize_text(record.get("brand"), strip_html=strip_html, field="brand"),
        "category_path": parse_category_path(record.get("category_path"), separator=category_separator, strip_html=strip_html),
        "price": parse_price(record.get("price")),
        "attributes": parse_attributes(record.get("attributes"), strip_html=strip_html),
        "updated_at": parse_timestamp(record.get("updated_at"), field="updated_at"),
    }
    if not any(item.get(f) for f in usable_text_fields):
        raise Rejected(Reason.NO_USABLE_TEXT, f"all of {', '.join(usable_text_fields)} empty")
    item["text_hash"] = text_fingerprint(item)
    return item


def validate_interaction_record(raw: str | None, *, default_event_type: str, strip_html: bool) -> dict[str, Any]:
    record = load_record(raw)
    event_type = normalize_text(record.get("event_type"), strip_html=strip_html, field="event_type")
    session = record.get("session_id")
    return {
        "user_id": normalize_id(record.get("user_id"), reason=Reason.MISSING_USER_ID),
        "item_id": normalize_id(record.get("item_id"), reason=Reason.MISSING_ITEM_ID),
        "event_type": event_type or default_event_type,
        "timestamp": parse_timestamp(record.get("timestamp"), field="timestamp"),
        "query": normalize_text(record.get("query"), strip_html=strip_html, field="query"),
        "session_id": None if session in (None, "") else normalize_id(session, reason=Reason.MALFORMED_RECORD),
    }
