"""Leaf helpers with one meaning everywhere: every layer (core, writers, readers, beam, tools)
may import them, and they import no other pipeline module and no framework.

``paths``: whether a path is local or remote (``file://`` is local). ``sizes``: byte counts
for people (decimal units). ``digest``: the sha256 of a tree of files, one algorithm wherever
the files are stored. ``tfrecord``: TFRecord framing (length, masked CRC32C), written by the
writers and checked by the readers. ``protowire``: the protobuf wire format the Example
writer and the trainers' TensorBoard events encode by hand. ``allocator`` and ``collector``:
glibc's malloc and Python's garbage collector, set once per worker process.
"""
