"""The collection names Milvus takes; the settings, the store and the thumbnails check them alike."""

import re

COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


def collection_name_problem(name: str) -> str:
    """Why Milvus would refuse `name` as a collection name, or ""."""
    if COLLECTION_NAME.fullmatch(name):
        return ""
    shown = name if len(name) <= 100 else name[:100] + "…"
    return (
        f"collection name {shown!r} is not one Milvus takes: a letter or _, then letters, digits or _, "
        "at most 255 characters"
    )
