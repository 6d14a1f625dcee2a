# oxy in a container: the nightly loop (ingest, score, train, forecast, monitor, report) and
# `oxy sql`, as a non-root user over a mounted warehouse.
#
#   make image                      # wheelhouse/ on the host, then docker/podman/buildah build
#   docker run --rm -v "$PWD/warehouse:/warehouse" oxy sql "select count(*) from readings"
#
# The build is offline: every wheel (oxy's dependencies and its build backend) comes from
# ./wheelhouse, made on the host by `make wheelhouse` for the image's Python (3.11).
# To let pip use an index instead: --build-arg PIP_INDEX_OPTS="" (wheelhouse/ may be empty).
# BASE_IMAGE: any Debian-like image with python3 (and its venv module); `scripts/check-image`
# builds one with debootstrap where no registry can be reached.
ARG BASE_IMAGE=python:3.11-slim

# --- stage 1: oxy's wheel and every dependency's, installed into a venv ------------------
FROM ${BASE_IMAGE} AS wheels
ARG PIP_INDEX_OPTS="--no-index --find-links /wheelhouse"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY wheelhouse/ /wheelhouse/
COPY pyproject.toml README.md cli.py ./
COPY engine/ engine/
COPY sql/ sql/
# sql/ goes into the wheel as engine/sql (hatchling force-include): the installed package
# finds its queries without the source tree. pip and setuptools leave the venv, and so do
# the dependencies' own test suites, C headers and Cython sources (nothing imports them).
RUN python3 -m venv /opt/oxy \
 && /opt/oxy/bin/pip wheel --quiet ${PIP_INDEX_OPTS} --wheel-dir /wheels . \
 && /opt/oxy/bin/pip install --quiet --no-index --find-links /wheels oxy \
 && /opt/oxy/bin/python -c "import engine.warehouse as w; assert (w.SQL_DIR / 'marts').is_dir(), w.SQL_DIR" \
 && /opt/oxy/bin/pip uninstall --quiet --yes pip setuptools \
 && site=$(/opt/oxy/bin/python -c "import sysconfig; print(sysconfig.get_path('purelib'))") \
 && find "$site" -depth -mindepth 2 -type d \( -name tests -o -name include \) \
      -not -path '*.dist-info/*' -exec rm -rf {} + \
 && find "$site" -type f \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.h' \
      -o -name '*.hpp' -o -name '*.c' -o -name '*.cpp' \) -delete

# --- stage 2: the runtime: python3, OpenMP's runtime for LightGBM, the venv -------------
FROM ${BASE_IMAGE} AS runtime
# LightGBM loads libgomp.so.1; a base without it gets Debian's libgomp1 (the only package).
RUN if ! ldconfig -p | grep -q 'libgomp\.so\.1 '; then \
      apt-get update \
      && apt-get install --yes --no-install-recommends libgomp1 \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /data --shell /usr/sbin/nologin oxy \
 && mkdir -p /warehouse /config /data \
 && chown oxy:oxy /warehouse /data \
 && printf '%s\n' \
      '# oxy configuration (TOML). Built-in defaults apply to every key not set here.' \
      '# Mount your own folder at /config with oxy.toml declaring [sources.NAME] mappings,' \
      '# or point OXY_CONFIG (or --config) at another file. README.md: "Configuration".' \
      > /config/oxy.toml
COPY --from=wheels /opt/oxy /opt/oxy

LABEL org.opencontainers.image.title="oxy" \
      org.opencontainers.image.description="Dissolved-oxygen analytics: anomaly scoring, week-ahead forecasts, oxy sql"
ENV PATH=/opt/oxy/bin:$PATH \
    OXY_WAREHOUSE=/warehouse \
    OXY_CONFIG=/config/oxy.toml \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER oxy
# /data: exports to ingest and files oxy writes (demo data, `oxy sql --output`): outside
# the warehouse, which `oxy sql --output` refuses to write into.
WORKDIR /data
VOLUME ["/warehouse", "/config"]
ENTRYPOINT ["oxy"]
CMD ["--help"]
