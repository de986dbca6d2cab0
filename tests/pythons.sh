#!/usr/bin/env bash
# The pytest suite (and, where asked, the conformance run) on every CPython ferroloop supports
# besides the machine's own python3, which `make test` covers directly.
#
#   tests/pythons.sh                          # 3.12 3.13 3.14 3.15: pytest; 3.14 3.15: conformance
#   tests/pythons.sh 3.15                     # one version
#   tests/pythons.sh 3.14 -- -x -k tls        # pytest arguments (then no conformance run)
#   tests/pythons.sh 3.15 --conformance --update    # only the conformance run, with its arguments
#   tests/pythons.sh 3.14 --run python -c 'import ferroloop'   # any command in the venv
#   tests/pythons.sh 3.14-dbg                 # the Py_DEBUG interpreter (refcount/GIL assertions)
#   tests/pythons.sh --shell 3.15             # an interactive shell in the 3.15 venv
#   tests/pythons.sh 3.11 3.14 --wheel        # a release wheel each into dist/ (tests/wheel/build.sh)
#
# Each run builds and installs the working tree (a copy of it, inside the chroot) into a fresh venv.
#
# 3.12 and 3.13 come from pyenv (or python3.X on PATH). 3.14 and 3.15 come from Debian's `sid`
# suite, installed into a chroot (debootstrap) kept at $FERROLOOP_CHROOT (default
# ${TMPDIR:-/tmp}/ferroloop-sid) and reused by later runs. That needs root and the Debian mirror apt
# already uses. A version that cannot be had fails the run: CI must not pass on fewer Pythons
# than it names.
set -euo pipefail
cd "$(dirname "$0")/.."
project=$(pwd)

CHROOT=${FERROLOOP_CHROOT:-${TMPDIR:-/tmp}/ferroloop-sid}
CHROOT_VERSIONS=(3.14 3.15)
CONFORMANCE_VERSIONS=" 3.14 3.15 "
# Bump to rebuild an existing chroot when the package list changes.
CHROOT_STAMP="ferroloop-chroot-v1"

shell=0
mode=default  # default | pytest | conformance | run | wheel
versions=()
extra_args=()

parse_args() {
    while (($#)); do
        case $1 in
            --shell) shell=1 ;;
            --) mode=pytest; shift; extra_args=("$@"); break ;;
            --conformance) mode=conformance; shift; extra_args=("$@"); break ;;
            --run) mode=run; shift; extra_args=("$@"); break ;;
            --wheel) mode=wheel ;;
            *) versions+=("$1") ;;
        esac
        shift
    done
    ((${#versions[@]})) || versions=(3.12 3.13 3.14 3.15)
}

log() { echo "pythons: $*"; }

# ----------------------------------------------------------------------------- the sid chroot
mounted=()
unmount_all() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount -l "${mounted[i]}" 2>/dev/null || true
    done
    mounted=()
}
trap unmount_all EXIT

debian_mirror() {
    # The URI apt already uses for Debian's main archive (deb822 or one-line format).
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' |
        grep -v -- '-security' | head -n 1 || true)
    if [[ -z $uri ]]; then
        uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
            awk '{print $2}' | grep -v -- '-security' | head -n 1 || true)
    fi
    [[ -n $uri ]] || { log "no Debian mirror in apt's sources"; return 1; }
    echo "$uri"
}

chroot_packages() {
    local v pkgs="gcc libc6-dev cargo rustc make ca-certificates"
    for v in "${CHROOT_VERSIONS[@]}"; do
        pkgs+=" python$v python$v-dev python$v-venv libpython$v-testsuite python$v-dbg"
    done
    echo "$pkgs"
}

chroot_create() {
    if [[ -f $CHROOT/.$CHROOT_STAMP ]]; then
        return 0
    fi
    [[ $(id -u) == 0 ]] || { log "building the Python 3.14/3.15 chroot needs root"; return 1; }
    local mirror
    mirror=$(debian_mirror)
    if ! command -v debootstrap >/dev/null; then
        log "installing debootstrap"
        apt-get install -y -q debootstrap >/dev/null ||
            { apt-get update -q >/dev/null && apt-get install -y -q debootstrap >/dev/null; }
    fi
    log "creating $CHROOT from $mirror (sid)"
    rm -rf "$CHROOT"
    debootstrap --variant=minbase sid "$CHROOT" "$mirror" >"${CHROOT}.debootstrap.log" 2>&1 ||
        { tail -n 20 "${CHROOT}.debootstrap.log"; return 1; }
    # The archive may be a dated snapshot whose Release file has expired.
    echo 'Acquire::Check-Valid-Until "false";' >"$CHROOT/etc/apt/apt.conf.d/99ferroloop"
    cp /etc/resolv.conf "$CHROOT/etc/resolv.conf"
    # shellcheck disable=SC2046
    if ! chroot "$CHROOT" apt-get update -q >"${CHROOT}.apt.log" 2>&1 ||
        ! chroot "$CHROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends $(chroot_packages) >>"${CHROOT}.apt.log" 2>&1; then
        tail -n 30 "${CHROOT}.apt.log"
        log "could not install $(chroot_packages) from sid; see ${CHROOT}.apt.log"
        return 1
    fi
    touch "$CHROOT/.$CHROOT_STAMP"
}

chroot_enter() {
    # What the tests need inside: /proc (fd counting, pidfds), /dev and a devpts (ptys, /dev/null),
    # the host's name resolution and CA bundle (pip talks to the registry as the host does).
    [[ -n ${mounted[*]:-} ]] && return 0
    # One run at a time: each refreshes the chroot's copy of the tree and its mounts.
    exec 9>"$CHROOT.lock"
    flock 9
    chroot_create
    cp /etc/resolv.conf "$CHROOT/etc/resolv.conf"
    local ca=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
    if [[ -f $ca ]]; then
        mkdir -p "$CHROOT$(dirname "$ca")"
        cp "$ca" "$CHROOT$ca"
    fi
    mount -t proc proc "$CHROOT/proc" && mounted+=("$CHROOT/proc")
    mount --bind /dev "$CHROOT/dev" && mounted+=("$CHROOT/dev")
    mount -t devpts -o newinstance,ptmxmode=0666 devpts "$CHROOT/dev/pts" &&
        mounted+=("$CHROOT/dev/pts")
    mkdir -p "$CHROOT/dev/shm"
    mount -t tmpfs tmpfs "$CHROOT/dev/shm" && mounted+=("$CHROOT/dev/shm")
    # A fresh copy of the working tree, so the chroot's build never touches the host's target/.
    rm -rf "$CHROOT/ferroloop"
    mkdir -p "$CHROOT/ferroloop"
    tar -C "$project" --exclude=./target --exclude=./.git --exclude='*/__pycache__' \
        --exclude=./tests/conformance/.results --exclude=./dist -cf - . | tar -C "$CHROOT/ferroloop" -xf -
}

in_chroot() {
    # PIP_FIND_LINKS and the like may name host paths the chroot does not have.
    chroot "$CHROOT" env -u PIP_FIND_LINKS HOME=/root PATH=/usr/local/bin:/usr/bin:/bin TMPDIR=/tmp \
        CARGO_TARGET_DIR=/root/ferroloop-target "$@"
}

# ----------------------------------------------------------------------------- one version
status=0
run_version() {
    local version=$1 base=${1%-dbg} py venv run=() run_in_chroot=
    if [[ " ${CHROOT_VERSIONS[*]} " == *" $base "* ]]; then
        chroot_enter || { log "Python $version: cannot be had here"; return 1; }
        py=/usr/bin/python$version
        [[ -x $CHROOT$py ]] || { log "Python $version: $py missing in $CHROOT"; return 1; }
        venv=/root/venv-$version
        run=(in_chroot)
        # The chroot's copy of the tree is where this version builds and tests.
        run+=(env -C /ferroloop)
        run_in_chroot=1
    else
        py=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/python 2>/dev/null |
            tail -n 1 || true)
        [[ -n $py ]] || py=$(command -v "python$version" || true)
        # A pyenv shim for a version that is not selected exists but does not run.
        if [[ -z $py ]] || ! "$py" -c "" 2>/dev/null; then
            log "Python $version: not on this machine (pyenv or python$version on PATH)"
            return 1
        fi
        venv=${TMPDIR:-/tmp}/ferroloop-venv-$version
        run=(env -C "$project")
    fi
    log "Python $version ($("${run[@]}" "$py" -c 'import sys; print(sys.version.split()[0])'))"
    if [[ $mode == wheel ]]; then
        # Builds with its own tools and venvs; nothing to install first.
        "${run[@]}" bash tests/wheel/build.sh "$py" dist || return 1
        if [[ -n ${run_in_chroot:-} ]]; then
            local wheel
            wheel=$(cd "$CHROOT/ferroloop/dist" && echo ferroloop-*-"cp${version/./}"-*.whl)
            mkdir -p "$project/dist"
            cp "$CHROOT/ferroloop/dist/$wheel" "$project/dist/"
            log "copied $wheel to dist/"
        fi
        return 0
    fi
    "${run[@]}" "$py" -m venv --clear "$venv"
    # The test extra brings the servers of tests/test_servers.py, which must then pass. The debug
    # build's run is there for ferroloop's own refcount and GIL assertions: it installs nothing
    # else, and its server tests skip (saying why).
    local spec=".[test]" require_servers=1
    if [[ $version == *-dbg ]]; then
        spec=". pytest pytest-timeout"
        require_servers=0
    fi
    # shellcheck disable=SC2086
    "${run[@]}" "$venv/bin/pip" install -q --disable-pip-version-check $spec
    if ((shell)); then
        "${run[@]}" bash -c "source $venv/bin/activate && exec bash -i"
        return 0
    fi
    local rc=0
    case $mode in
        run)
            "${run[@]}" env PATH="$venv/bin:/usr/local/bin:/usr/bin:/bin" "${extra_args[@]}" || rc=1
            ;;
        conformance)
            "${run[@]}" "$venv/bin/python" tests/conformance/run.py "${extra_args[@]}" || rc=1
            ;;
        *)
            "${run[@]}" env FERROLOOP_REQUIRE_SERVERS=$require_servers \
                "$venv/bin/python" -m pytest tests --ignore=tests/conformance -q -rs \
                -p no:cacheprovider "${extra_args[@]}" || rc=1
            if [[ $mode == default && $CONFORMANCE_VERSIONS == *" $version "* ]]; then
                "${run[@]}" "$venv/bin/python" tests/conformance/run.py || rc=1
            fi
            ;;
    esac
    if [[ $mode == conformance && -n ${run_in_chroot:-} ]]; then
        # --update rewrote the list inside the chroot's copy: bring it back.
        local list="tests/conformance/expected/${base}.txt"
        if [[ -f $CHROOT/ferroloop/$list ]] && ! cmp -s "$CHROOT/ferroloop/$list" "$project/$list"; then
            cp "$CHROOT/ferroloop/$list" "$project/$list"
            log "copied $list back from the chroot"
        fi
    fi
    return $rc
}

main() {
    parse_args "$@"
    for version in "${versions[@]}"; do
        if ! run_version "$version"; then
            log "Python $version: FAILED"
            status=1
        fi
    done
    unmount_all
    return $status
}

# One line, read whole before it runs: editing this file while it runs cannot derail it.
main "$@"; exit $?
