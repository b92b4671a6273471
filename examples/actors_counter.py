"""A counter actor shared by several tasks, and a named actor looked up by name."""

import freight as ray


@ray.remote
class Counter:
    def __init__(self) -> None:
        self.value = 0

    def increment(self, by: int = 1) -> int:
        self.value += by
        return self.value

    def read(self) -> int:
        return self.value


@ray.remote
def worker(counter, times: int) -> None:
    for _ in range(times):
        ray.get(counter.increment.remote())


def main() -> None:
    ray.init()
    counter = Counter.options(name="global_counter").remote()
    ray.get([worker.remote(counter, 25) for _ in range(4)])
    same = ray.get_actor("global_counter")
    total = ray.get(same.read.remote())
    assert total == 100, total
    ray.shutdown()
    print(f"counter reached {total}")


if __name__ == "__main__":
    main()
