"""`vlfuse data inspect --decode`: readers only check that image files exist, so a corrupt image is found
when training reaches it; --decode decodes every image of the split first and names the bad ones."""

from __future__ import annotations

import json

from conftest import BASE_CONFIG


def test_decode_names_every_corrupt_image_and_why(copy_shapes, cli_main):
    root = copy_shapes()
    images = sorted((root / "images" / "train").iterdir())
    truncated, garbage = images[3], images[7]
    truncated.write_bytes(truncated.read_bytes()[:60])  # a PNG cut off inside its pixel data
    garbage.write_bytes(b"not an image at all")
    args = ("data", "inspect", BASE_CONFIG, "--set", f"data.root={root}")

    plain = cli_main(*args)
    assert plain.returncode == 0 and "problems: none" in plain.stdout  # they exist: the readers see nothing
    assert "decode" not in plain.stdout

    text = cli_main(*args, "--decode")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    start = lines.index("images: 2 of 14 do not decode:")
    assert lines[start + 1].startswith(f"  - {truncated}: corrupt or truncated image")
    assert lines[start + 2] == f"  - {garbage}: not an image or unsupported format (supported: JPEG, PNG, WEBP, " \
                               "GIF, BMP)"

    report = json.loads(cli_main(*args, "--decode", "--json").stdout)
    assert report["decoded"]["images"] == 14
    assert [bad["path"] for bad in report["decoded"]["bad"]] == [str(truncated), str(garbage)]
    assert "images: all 1 decode" in cli_main(*args, "--decode", "--split", "val").stdout
