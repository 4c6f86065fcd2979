"""hanrt_bench: the measurements behind ``hanrt bench`` and ``hanrt eval``.

Needs only ``hanrt`` (numpy, Pillow); plots need matplotlib, the PyTorch baselines torch, the E1
photo set scikit-image — each imported lazily and skipped with a message where missing.

- :mod:`~hanrt_bench.latency`: warm-up, timed iterations, percentiles, stage timers.
- :mod:`~hanrt_bench.flops`: multiply-adds of HAN from its hyperparameters; of other architectures
  counted by ``torch.utils.flop_counter``.
- :mod:`~hanrt_bench.peak`, :mod:`~hanrt_bench.envinfo`: device peak and environment record.
- :mod:`~hanrt_bench.baselines`: PyTorch eager, the official quadrant chop, a naive tile loop, hanrt.
- :mod:`~hanrt_bench.suite`, :mod:`~hanrt_bench.bench`, :mod:`~hanrt_bench.report`: sweeps and outputs.
- :mod:`~hanrt_bench.quality`, :mod:`~hanrt_bench.evaluate`: the papers' PSNR/SSIM protocol and datasets.
"""
