#!/usr/bin/env bash
# Installs the two drivers wgpu can use on a machine without a GPU, both Mesa's: lavapipe
# (CPU Vulkan) and llvmpipe behind EGL (CPU OpenGL for wgpu's GL backend; EGL needs no
# display: the libEGL loader, Mesa's EGL and its gallium driver). On Debian bookworm the
# backports suite carries Mesa 25, 3-5x faster than bookworm's own Mesa 22 on thin matrix
# shapes, so we add that suite, built from the machine's existing Debian source entry (no
# mirror host is written here); all Mesa packages come from the same suite.
# Also installs Khronos' shader validators and Debian's Fashion-MNIST package, the real data
# set the examples use.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-vulkan: no apt-get here; install your platform's Vulkan driver yourself" >&2
  exit 0
fi

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
backports=""
if [ -n "$codename" ] && [ -f /etc/apt/sources.list.d/debian.sources ] \
   && ! grep -rqs "${codename}-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  # Copy the first stanza that serves "$codename" (deb822 format) with the suite swapped.
  awk -v cn="$codename" '
    BEGIN { RS=""; ORS="\n\n" }
    $0 ~ ("Suites:[^\n]*" cn "( |\n|$)") && $0 !~ /security/ && !done {
      gsub(/Suites:[^\n]*/, "Suites: " cn "-backports"); print; done=1 }
  ' /etc/apt/sources.list.d/debian.sources | $SUDO tee /etc/apt/sources.list.d/backports.sources >/dev/null
  [ -s /etc/apt/sources.list.d/backports.sources ] || $SUDO rm -f /etc/apt/sources.list.d/backports.sources
fi
if grep -rqs "${codename}-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  backports="-t ${codename}-backports"
fi

$SUDO apt-get update -qq
drivers="mesa-vulkan-drivers libegl1 libegl-mesa0 libgl1-mesa-dri"
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $backports $drivers \
  || $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $drivers
# Khronos' SPIR-V validator and GLSL compiler: tests/shader_backends.rs checks naga's SPIR-V
# and GLSL ES output of every kernel with them when they are installed.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq spirv-tools glslang-tools
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist || true
# shellcheck disable=SC2086
dpkg-query -W -f='installed ${Package} ${Version}\n' $drivers
