# The gremesh operator image: Debian with the OpenSSH client, and a gremesh binary built
# beforehand (`cargo build --release`), so building the image needs no Rust toolchain.
#
#   docker build -t gremesh:0.1.0 .
#   docker build --build-arg BASE_IMAGE=my-debian:bookworm \
#                --build-arg GREMESH_BINARY=target/debug/gremesh -t gremesh:dev .
#
# The binary links against glibc: build it on Debian 12 (bookworm) or older, or match the
# base to the build machine. tests/image/test.sh builds this image from a debootstrapped base
# without any registry and runs it against the lab hosts.

# Debian bookworm, or any image derived from it; one that already has `ssh` needs no network
# during the build.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

# Path of the gremesh binary inside the build context.
ARG GREMESH_BINARY=target/release/gremesh
# Version label only; the binary reports its own with --version.
ARG VERSION=0.1.0

LABEL org.opencontainers.image.title="gremesh" \
      org.opencontainers.image.description="Layer-2 meshes of GRE/VXLAN tunnels between plain Docker hosts, converged over SSH" \
      org.opencontainers.image.source="https://github.com/gremesh/gremesh" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

# gremesh drives the OpenSSH client (one multiplexed connection per host). Install it only
# when the base lacks it, so a base that has it builds offline.
RUN if ! command -v ssh >/dev/null; then \
      apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
           openssh-client ca-certificates \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
    && ssh -V

# A fixed non-root user. OpenSSH refuses to run for a uid without a passwd entry, so the
# Helm chart's runAsUser (65532) must exist here.
RUN groupadd --system --gid 65532 gremesh \
    && useradd --system --uid 65532 --gid 65532 --no-create-home \
         --home-dir /nonexistent --shell /usr/sbin/nologin gremesh

COPY ${GREMESH_BINARY} /usr/local/bin/gremesh

# Per connection gremesh writes a control socket, the private key (0600) and known_hosts to
# a private directory under $TMPDIR; with a read-only root filesystem mount a volume here.
ENV TMPDIR=/tmp
USER 65532:65532
ENTRYPOINT ["gremesh"]
CMD ["operator"]
