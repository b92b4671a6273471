"""Estimate pi with Monte Carlo sampling spread over remote tasks."""

import random

import freight as ray


@ray.remote
def count_inside(samples: int, seed: int) -> int:
    rng = random.Random(seed)
    inside = 0
    for _ in range(samples):
        x, y = rng.random(), rng.random()
        if x * x + y * y <= 1.0:
            inside += 1
    return inside


def main() -> None:
    ray.init()
    batches, samples = 8, 200_000
    refs = [count_inside.remote(samples, seed) for seed in range(batches)]
    inside = sum(ray.get(refs))
    pi = 4.0 * inside / (batches * samples)
    assert abs(pi - 3.14159) < 0.01, pi
    ray.shutdown()
    print(f"pi is approximately {pi:.3f}")


if __name__ == "__main__":
    main()
