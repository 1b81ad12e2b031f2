"""The functions of thumbnails.yaml."""

import os


def list_images(count):
    """The names of the images to make thumbnails of."""
    return [f"image-{i}.png" for i in range(count)]


def resize(item, index, width):
    """Pretends to resize one image: writes a file, returns its name."""
    name = os.path.join("out", f"thumb-{index}.txt")
    with open(name, "w") as f:
        f.write(f"{item} at {width}px\n")
    return name


def report(thumbs):
    print(f"{len(thumbs)} thumbnails: {', '.join(thumbs)}")
    return len(thumbs)
