# The ferrokv image: the prebuilt `ferrokv` and `ferroctl` binaries, the shared libraries
# they link (as `ldd` lists them, the dynamic loader included) and a non-root user. It
# starts FROM scratch, so building it pulls nothing: no registry is needed, here or in an
# air-gapped cluster.
#
# Build it with `scripts/build-image` (release binaries; `--debug` for the debug build),
# which compiles the binaries and prepares the build context this file expects:
#   rootfs/   copied to / as is: usr/local/bin/{ferrokv,ferroctl}, the libraries at the
#             paths ldd printed, etc/{passwd,group,nsswitch.conf}
#   data/     an empty directory that becomes /var/lib/ferrokv, owned by the ferrokv user
# Only classic-builder instructions are used, so it builds with or without BuildKit.
FROM scratch

COPY rootfs/ /
# A fresh named volume (docker) takes this directory's owner, so the node can write to it;
# in Kubernetes the pod's fsGroup does the same for the PersistentVolume.
COPY --chown=10001:10001 data/ /var/lib/ferrokv/

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/ferrokv

# PATH lets `kubectl exec POD -- ferroctl ...` find ferroctl. The FERROKV_* defaults make
# `docker run ferrokv` useful; the StatefulSet sets all of them itself.
ENV PATH=/usr/local/bin \
    FERROKV_DATA_DIR=/var/lib/ferrokv \
    FERROKV_LISTEN_CLIENT=0.0.0.0:2379 \
    FERROKV_LISTEN_PEER=0.0.0.0:2380 \
    FERROKV_LISTEN_METRICS=0.0.0.0:2381

# 2379 client gRPC (KV, Cluster, Maintenance, gRPC health), 2380 peer gRPC (Raft),
# 2381 HTTP (/livez, /readyz, /metrics).
EXPOSE 2379 2380 2381

ENTRYPOINT ["/usr/local/bin/ferrokv"]
