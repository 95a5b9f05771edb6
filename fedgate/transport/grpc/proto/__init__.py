"""Generated from proto/fedgate/v1/fedgate.proto by tools/gen_proto.py. Do not edit."""
