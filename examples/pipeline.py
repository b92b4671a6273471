"""A two-stage pipeline: tasks that submit tasks, results consumed as they finish with wait."""

import freight as ray


@ray.remote
def tokenize(line: str) -> list[str]:
    return line.lower().split()


@ray.remote
def count_words(lines: list[str]) -> dict[str, int]:
    # Each document fans out one task per line and gathers them inside this task.
    token_lists = ray.get([tokenize.remote(line) for line in lines])
    counts: dict[str, int] = {}
    for tokens in token_lists:
        for token in tokens:
            counts[token] = counts.get(token, 0) + 1
    return counts


def main() -> None:
    ray.init()
    documents = [
        [f"the quick brown fox {i}", "jumps over the lazy dog", "The End"] for i in range(12)
    ]
    pending = [count_words.remote(doc) for doc in documents]
    totals: dict[str, int] = {}
    finished = 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=min(4, len(pending)), timeout=60)
        for counts in ray.get(ready):
            finished += 1
            for word, n in counts.items():
                totals[word] = totals.get(word, 0) + n
    assert finished == len(documents)
    assert totals["the"] == 3 * len(documents), totals
    ray.shutdown()
    print(f"counted {sum(totals.values())} words in {finished} documents")


if __name__ == "__main__":
    main()
