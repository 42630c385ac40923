"""Image preparation: reading the formats people have, and making what goes on the wire.

- `formats`: which type some bytes are (magic bytes), opening them with that one
  Pillow plugin; HEIC/HEIF through pillow-heif (the `[heif]` extra), registered lazily.
- `jpeg_metadata`: a JPEG's metadata segments bounded before Pillow parses them.
- `limits`: the pixel, side, aspect, byte and metadata caps.
- `orientation`: EXIF orientation read from the header, applied to the pixels once.
- `probe`: an image's type, size and orientation from its header, without decoding.
- `prepare`: one decode, upright, shrunk (JPEG draft mode), encoded as JPEG or PNG.
- `resize`: `ResizePolicy`, the downscale rule.

`llava_bridge.images.ImageInput` is the public face of all of this; everything here
is synchronous and does no IO, so async callers run it with `asyncio.to_thread`.
"""
