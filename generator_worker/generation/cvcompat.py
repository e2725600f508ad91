"""OpenCV as an untyped module: its bundled stubs reject valid numpy arrays (uint8 masks,
float32 mattes) in many overloads, so the generator code sees ``cv2`` as ``Any``."""

from typing import Any

import cv2 as _cv2

cv2: Any = _cv2
