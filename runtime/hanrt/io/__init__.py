"""hanrt's I/O: still images (:mod:`hanrt.io.images`, Pillow, tier 0), and the streaming modules
(frames, video through PyAV, cameras through OpenCV) which import their heavy packages lazily.

Nothing is imported here, so ``import hanrt.io`` costs nothing; import the submodule you need.
"""
