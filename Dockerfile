# syntax=docker/dockerfile:1
# actgate: a static, non-root image that runs with a read-only root filesystem.
#   docker build -t actgate:dev .
#   docker run --rm -p 8080:8080 -p 8081:8081 -p 9464:9464 --read-only \
#     --tmpfs /var/lib/actgate actgate:dev
# Mount the config at /etc/actgate/actgate.yaml and the data directory at /var/lib/actgate.

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
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
    && install -D -m 0755 target/release/actgate /out/actgate \
    && install -d -m 0700 /out/data

# distroless/cc has glibc and libgcc (ring and SQLite are built in); "nonroot" is uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/actgate /usr/local/bin/actgate
COPY --from=build /src/config/actgate.yaml /etc/actgate/actgate.yaml
COPY --from=build --chown=65532:65532 /out/data /var/lib/actgate
USER 65532:65532
EXPOSE 8080 8081 9464
ENTRYPOINT ["/usr/local/bin/actgate"]
CMD ["serve", "--config", "/etc/actgate/actgate.yaml", "--log-format", "json"]
