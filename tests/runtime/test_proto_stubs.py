"""The committed gRPC stubs are exactly what scripts/gen_proto.py makes from freight.proto."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "runtime" / "protocol" / "generated"


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_the_proto(tmp_path):
    generated = _load_generator().generate(tmp_path)
    assert generated, "gen_proto.generate() produced no files"
    fresh = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    committed = {p.name: p.read_bytes() for p in COMMITTED.iterdir() if p.is_file()}
    stale = sorted(name for name in fresh if committed.get(name) != fresh[name])
    extra = sorted(set(committed) - set(fresh))
    assert not stale and not extra, (
        f"the stubs in runtime/protocol/generated are stale (differ: {stale}, "
        f"not generated: {extra}); run `make proto` and commit the result"
    )


def test_the_read_only_token_is_allowed_only_calls_that_exist_and_read() -> None:
    from freight.protocol.generated import freight_pb2 as pb
    from freight.util.grpc_auth import READ_ONLY_METHODS

    methods = {
        f"/{service.full_name}/{method.name}"
        for service in pb.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    # Watch is the state stream, which a newer head serves.
    assert READ_ONLY_METHODS - methods <= {"/freight.v1.StateService/Watch"}
    changing = ("Kill", "Submit", "Stop", "Create", "Remove", "Put", "Del", "Shutdown",
                "Register", "Report", "Reserve", "Return", "Free", "Start", "Finish", "Pull",
                "Unregister", "Heartbeat", "CheckHealth", "Cancel")  # fmt: skip
    for name in READ_ONLY_METHODS:
        assert not name.rpartition("/")[2].startswith(changing), name
