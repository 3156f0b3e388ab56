# The project's image: Ray's official image of the project's Ray and Python, with the project
# installed. KubeRay runs it (deploy/rayjob.yaml); so can any Ray cluster that runs containers.
#   docker build -t rayplatform:0.1.0 .                                                       # CPU (head)
#   docker build --build-arg BASE=rayproject/ray:2.60.0-py311-gpu -t rayplatform:0.1.0-gpu .  # GPU workers
ARG BASE=rayproject/ray:2.60.0-py311-cpu
FROM ${BASE}

WORKDIR /home/ray/rayplatform
# torch first, at the project's pins (pyproject.toml): its wheels carry their own CUDA libraries,
# so the same two lines serve the CPU and the GPU image.
RUN pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users platform/ platform/
COPY --chown=ray:users trainables/ trainables/
COPY --chown=ray:users search_spaces/ search_spaces/
COPY --chown=ray:users rayplatform/ rayplatform/
RUN pip install --no-cache-dir -e .
# Every process of the image, Ray's workers included, finds the project's `platform` package before
# the standard library's module of that name (the package is a superset of it).
ENV PYTHONPATH=/home/ray/rayplatform
