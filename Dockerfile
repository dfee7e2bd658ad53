# echo-reactor in a container: the server and the load generator in one
# small image. Used by deploy/kubernetes/.
#
#   docker build -t echo-reactor .
#   docker run --rm -p 7007:7007 -p 7007:7007/udp echo-reactor
#
# Stage 1 builds a release binary; stage 2 keeps only that binary on a slim
# base and runs it as an unprivileged user.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Dependencies in a layer of their own: the manifest with stub sources
# builds every crate, and the layer is reused until Cargo.toml or
# Cargo.lock change, so a source change rebuilds only echo-reactor.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && for b in load reactor models soak; do echo 'fn main() {}' > benches/$b.rs; done \
    && cargo build --release --locked --bin echo-reactor \
    && rm -rf src benches
COPY src ./src
COPY benches ./benches
COPY examples ./examples
# COPY keeps the files' own times, which can be older than the stubs':
# touch them so cargo sees the change. The release profile strips.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin echo-reactor

FROM debian:bookworm-slim
COPY --from=build /src/target/release/echo-reactor /usr/local/bin/echo-reactor
# A fixed numeric uid, so that Kubernetes' runAsNonRoot can verify it.
RUN useradd --system --uid 10001 --no-create-home echo
USER 10001
EXPOSE 7007/tcp 7007/udp 9090/tcp
ENTRYPOINT ["echo-reactor"]
# Inside a container, listen on every address: the port mapping or the
# Service decides who can reach it.
CMD ["serve", "--tcp", "0.0.0.0:7007", "--udp", "0.0.0.0:7007", "--metrics", "0.0.0.0:9090"]
