# emperor in a container: the emperor is PID 1 and keeps one master per file in
# /etc/emperor/vassals.d (mount a directory or a Kubernetes ConfigMap there).
#   podman build --format docker -t localhost/emperor .
#   podman run -d -p 8080:8080 localhost/emperor          # the bundled hello vassal
#   podman run -d -p 8080:8080 -v ./vassals.d:/etc/emperor/vassals.d:ro localhost/emperor
# Extra arguments go to `emperor run`: e.g. `... localhost/emperor --grace 20 --shutdown-delay 5`.
FROM python:3.11-slim

# Logs go straight to stdout/stderr; no .pyc files in a possibly read-only root.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/emperor/bin:$PATH

# An unprivileged user with a fixed uid, so that mounted files can be prepared for it.
RUN groupadd --system --gid 10001 emperor \
    && useradd --system --uid 10001 --gid emperor --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin emperor

# The package, in its own virtualenv (whichever Python the base image has).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY emperor ./emperor
RUN python3 -m venv /opt/emperor \
    && /opt/emperor/bin/pip install --no-cache-dir . \
    && rm -rf /src

# The bundled example: the hello app and its vassal file, readable by everyone, owned by root.
COPY examples/hello/app.py /srv/hello/app.py
COPY deploy/container/vassals.d/hello.ini /etc/emperor/vassals.d/hello.ini

# Numeric, so that Kubernetes can verify runAsNonRoot.
USER 10001:10001
# `emperor status` and `emperor health` with no argument find the emperor from here.
WORKDIR /etc/emperor
EXPOSE 8080
STOPSIGNAL SIGTERM
# Exit 0 when the emperor answers on its control socket, is running (not draining
# after SIGTERM), is ready, and no vassal has been crash-looping for ~2 minutes.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["emperor", "health", "/etc/emperor/vassals.d"]
ENTRYPOINT ["emperor", "run", "/etc/emperor/vassals.d"]
CMD ["--grace", "30"]
