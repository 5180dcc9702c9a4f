"""scail: studio-grade character animation with the SCAIL model.

Importing this package is cheap: no torch, cv2, decord or pose backends are imported here.
Heavy modules are imported inside the functions that use them.
"""

__version__ = "0.1.0"
