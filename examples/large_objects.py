"""Large numpy arrays through the object store: put/get and task arguments."""

import numpy as np

import freight as ray


@ray.remote
def column_sums(matrix: np.ndarray) -> np.ndarray:
    return matrix.sum(axis=0)


@ray.remote
def scale(matrix: np.ndarray, factor: float) -> np.ndarray:
    return matrix * factor


def main() -> None:
    ray.init()
    matrix = np.arange(2048 * 1024, dtype=np.float64).reshape(2048, 1024)  # 16 MiB
    ref = ray.put(matrix)
    stored = ray.get(ref)
    assert np.array_equal(stored, matrix)
    assert not stored.flags.writeable  # a read-only view of the object store

    sums = ray.get(column_sums.remote(ref))
    assert np.allclose(sums, matrix.sum(axis=0))

    doubled = ray.get([scale.remote(ref, 2.0) for _ in range(4)])
    assert all(np.array_equal(d, matrix * 2.0) for d in doubled)

    megabytes = matrix.nbytes * 6 // (1024 * 1024)
    ray.shutdown()
    print(f"moved {megabytes} MiB of arrays through the object store")


if __name__ == "__main__":
    main()
