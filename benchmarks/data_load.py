"""Load time of a CIFAR-10 source: the first load (decode and cache) and later ones (cache).

Uses a fresh temporary cache folder, so the first load always decodes. Prints the
times and writes benchmarks/results/data-load-<date>.json.

    python benchmarks/data_load.py [--source PATH] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
from record import save

from trainers.data import cache_file, load_cifar10

SHARED_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SHARED_ARCHIVE)
    parser.add_argument("--repeats", type=int, default=3, help="cached loads to time")
    args = parser.parse_args()

    def progress(message: str) -> None:
        print(f"  {message}", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="data-load-") as tmp:
        cache_dir = Path(tmp)
        start = time.perf_counter()
        data = load_cifar10(args.source, cache_dir=cache_dir, progress=progress)
        cold = time.perf_counter() - start
        cached = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            again = load_cifar10(args.source, cache_dir=cache_dir)
            cached.append(time.perf_counter() - start)
            assert np.array_equal(again.train_images, data.train_images)
        cache_bytes = cache_file(data.digest, cache_dir).stat().st_size

    print(f"{args.source}: {len(data.train_labels):,} train / {len(data.test_labels):,} test")
    print(f"first load (decode + write cache): {cold:.2f} s")
    print(f"cached load: {min(cached):.2f} s best of {len(cached)} "
          f"({', '.join(f'{t:.2f}' for t in cached)}); cache file {cache_bytes / 2**20:.0f} MiB")

    save("data_load", "data-load", {
        "source": str(args.source),
        "source_bytes": args.source.stat().st_size,
        "digest": data.digest,
        "train_images": len(data.train_labels),
        "test_images": len(data.test_labels),
        "cold_load_s": round(cold, 3),
        "cached_load_s": [round(t, 3) for t in cached],
        "cache_file_bytes": cache_bytes,
    }, numpy=np.__version__, pillow=PIL.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
