"""ISO media files (HEIF, AVIF, MP4) by the brands of their `ftyp` box: which hold a picture, and which of
those are HEIC, phones' photos, which no decoder here reads. Needs nothing but Python: the SDK's core reads it
to tell a picture by its first bytes."""

AVIF_BRANDS = (b"avif", b"avis")
HEIC_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx")
# HEIF's own brands, which a HEIC or an AVIF file may give as its major one.
HEIF_BRANDS = (b"mif1", b"msf1")
PICTURE_BRANDS = AVIF_BRANDS + HEIC_BRANDS + HEIF_BRANDS


def brands(data: bytes) -> list[bytes]:
    """The brands of the file's `ftyp` box, its major one first (of those within `data`); none if it has
    no such box."""
    if data[4:8] != b"ftyp":
        return []
    end = min(int.from_bytes(data[:4], "big"), len(data))
    return [data[8:12], *(data[offset : offset + 4] for offset in range(16, end - 3, 4))]


def is_heic(data: bytes) -> bool:
    """Whether the file says it is a HEIC picture (by its major or a compatible brand), and not an AVIF."""
    found = brands(data)
    return any(brand in HEIC_BRANDS for brand in found) and not any(brand in AVIF_BRANDS for brand in found)
