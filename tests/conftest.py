"""Process-wide test settings that must be in place before any test module imports them."""

import os

# gcsfs picks its GCSFileSystem class when it is first imported: with this unset (default
# "true") it uses the experimental zonal/HNS class, whose gRPC probe stalls every call ~60 s
# against the local storage emulator (tests/test_gcs.py). Any module may import gcsfs first.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
