"""TFLite: converted with litert-torch (PT2E for int8), run in LiteRT.

- adapter: the format's record, registered in compress.backends.
- export: torch -> one TFLite file per precision; preflight: what a precision leaves in float, before calibrating.
- session: the file run in LiteRT (the device runner's interpreter).
"""
