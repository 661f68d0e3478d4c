"""Character Cards as people bring them: PNG, JSON (V1/V2/V3) and CHARX files, read into
our character model and written back out without loss. No image library: a PNG card
is a few chunks, read and written with struct and zlib."""
