"""Closed-loop load on Cerbos's gRPC check API (CheckResources), the interface its SDKs use:
the `cerbos-grpc` contender of benches/proxy-load.sh, beside `cerbos-check` (its HTTP API).

    python cerbos_grpc_load.py ADDRESS JWT SECONDS CONCURRENCY

ADDRESS is a gRPC target (`unix:/path` or `host:port`). The request — the same principal,
resource, action and JWT as the HTTP contender's body — is serialised once and sent as bytes,
so the client spends its time on the wire, not in protobuf. Checks first that the answer is
an allow, then keeps CONCURRENCY calls in flight for SECONDS and prints
`<requests/s> <client CPU fraction>`: a fraction near 1.0 means the client, not Cerbos, set
the rate. Needs the `cerbos` SDK (its generated protobufs) and `grpcio`.
"""

import asyncio
import os
import sys
import time

import grpc
from cerbos.request.v1 import request_pb2
from cerbos.response.v1 import response_pb2

METHOD = "/cerbos.svc.v1.CerbosService/CheckResources"


def request_bytes(jwt: str) -> bytes:
    return request_pb2.CheckResourcesRequest(
        principal={"id": "agent_bench", "roles": ["agent"]},
        resources=[{"actions": ["read"], "resource": {"kind": "customer", "id": "42"}}],
        aux_data={"jwt": {"token": jwt, "key_set_id": "bench"}},
    ).SerializeToString()


async def main(address: str, jwt: str, seconds: float, concurrency: int) -> None:
    body = request_bytes(jwt)
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(METHOD)  # bytes in, bytes out
        answer = response_pb2.CheckResourcesResponse.FromString(await call(body))
        effect = answer.results[0].actions["read"]
        if effect != 1:  # EFFECT_ALLOW
            sys.exit(f"Cerbos's gRPC check API answers {effect}, not EFFECT_ALLOW")
        done = 0
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                await call(body)
                done += 1

        cpu0, t0 = time.process_time(), time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
        print(f"{done / wall:.2f} {cpu / wall:.2f}")


if __name__ == "__main__":
    address, jwt, seconds, concurrency = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    asyncio.run(main(address, jwt, seconds, concurrency))
