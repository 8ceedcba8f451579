# syntax=docker/dockerfile:1
# actgate: a static, non-root image that runs with a read-only root filesystem.
#   docker build -t actgate:dev .
#   docker run --rm -p 8080:8080 -p 8081:8081 -p 9464:9464 --read-only \
#     --tmpfs /var/lib/actgate:uid=65532,gid=65532,mode=0700 -e ACTGATE_API_KEY=... actgate:dev
# The image's config (/etc/actgate/actgate.yaml) is config/actgate.yaml listening on 0.0.0.0
# with dataDir /var/lib/actgate (scripts/container-config); mount your own over it.
# scripts/container-check runs the binary under the same conditions (uid 65532, read-only
# root, tmpfs data directory) without a container engine; CI runs it.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so code changes do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && for b in decide tokens proxy audit; do echo 'fn main() {}' > benches/$b.rs; done \
    && cargo build --release --locked && rm -rf src benches
COPY src ./src
COPY config ./config
COPY benches ./benches
COPY scripts/container-config ./scripts/container-config
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
    && install -D -s -m 0755 target/release/actgate /out/actgate \
    && scripts/container-config config/actgate.yaml > /out/actgate.yaml \
    && /out/actgate config validate --config /out/actgate.yaml \
    && install -d -m 0700 /out/data

# distroless/cc has glibc and libgcc (ring and SQLite are built in); "nonroot" is uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/actgate /usr/local/bin/actgate
COPY --from=build /out/actgate.yaml /etc/actgate/actgate.yaml
COPY --from=build --chown=65532:65532 /out/data /var/lib/actgate
WORKDIR /var/lib/actgate
USER 65532:65532
EXPOSE 8080 8081 9464
ENTRYPOINT ["/usr/local/bin/actgate"]
CMD ["serve", "--config", "/etc/actgate/actgate.yaml", "--log-format", "json"]
