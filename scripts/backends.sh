# Sourced by scripts/test and scripts/bench: brings up every backend the tests and benchmarks
# use and exports where they are. A Python venv at ./.venv holds moto (the S3 server), tuspy
# (a third-party tus client the tests drive) and schemathesis (scripts/conformance); a moto
# server is started on a free loopback port and killed on exit; PostgreSQL is made to answer on
# 127.0.0.1:5432 (installing and starting Debian's if needed). Outside CI a backend that cannot
# be had is a warning; under CI=true it fails the run.
#
# Exports: HUIKAN_TEST_PYTHON, HUIKAN_TEST_PHOTOS, HUIKAN_TEST_ODK_VALIDATE, HUIKAN_TEST_XFORM_CHECK, HUIKAN_TEST_ENKETO, HUIKAN_TEST_CHROMEDRIVER, HUIKAN_TEST_CHROMIUM, HUIKAN_TEST_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
# HUIKAN_TEST_PG_URL, PROFILE, PROFILE_DIR. Set HUIKAN_TEST_S3_ENDPOINT or HUIKAN_TEST_PG_URL
# beforehand to use servers of your own.

MOTO_PIN='moto[server]==5.2.5'
TUSPY_PIN='tuspy==1.1.0'
SCHEMATHESIS_PIN='schemathesis==4.32.5'
VENV="$PWD/.venv"
PROFILE="${HUIKAN_PROFILE:-dev}"

log() { echo "$(basename "$0"): $*" >&2; }
in_ci() { [[ "${CI:-}" == true || "${CI:-}" == 1 ]]; }
# A backend that is missing fails the run under CI (as the Rust harness would), else warns.
missing() {
    if in_ci; then
        log "ERROR: $1, and CI=true requires every backend"
        exit 1
    fi
    log "WARNING: $1; the tests that need it will be skipped"
}
as_root() { [[ "$(id -u)" == 0 ]]; }

MOTO_PID=
cleanup() {
    if [[ -n "$MOTO_PID" ]] && kill -0 "$MOTO_PID" 2>/dev/null; then
        kill "$MOTO_PID" 2>/dev/null || true
        wait "$MOTO_PID" 2>/dev/null || true
    fi
    if [[ -n "${WORK:-}" ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
WORK="$(mktemp -d)"

# --- Python venv: moto (the S3 server), tuspy (a third-party tus client the tests drive) and
#     schemathesis (the API conformance run over openapi.yaml, scripts/conformance) ---
venv_ready() {
    [[ -x "$VENV/bin/moto_server" && -x "$VENV/bin/schemathesis" ]] &&
        "$VENV/bin/python" - "$MOTO_PIN" "$TUSPY_PIN" "$SCHEMATHESIS_PIN" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, wanted = pin.split("==")
    if version(name.split("[")[0]) != wanted:
        sys.exit(1)
import flask, tusclient, schemathesis  # moto's server extra, tuspy and schemathesis themselves
EOF
}
setup_venv() {
    if [[ ! -x "$VENV/bin/python" ]]; then
        rm -rf "$VENV"
        if ! python3 -m venv "$VENV" 2>"$WORK/venv.log"; then
            # Debian's python3 ships venv/ensurepip separately.
            as_root || { cat "$WORK/venv.log" >&2; return 1; }
            log "installing python3-venv"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null || return 1
            rm -rf "$VENV"
            python3 -m venv "$VENV" || return 1
        fi
    fi
    log "installing $MOTO_PIN $TUSPY_PIN $SCHEMATHESIS_PIN into .venv (about a minute, once)"
    "$VENV/bin/pip" install -q --disable-pip-version-check "$MOTO_PIN" "$TUSPY_PIN" "$SCHEMATHESIS_PIN" ||
        return 1
}
if venv_ready || { setup_venv && venv_ready; }; then
    export HUIKAN_TEST_PYTHON="$VENV/bin/python"
else
    missing "could not set up the Python venv at .venv (moto, tuspy, schemathesis)"
fi

# --- nasm: lets the JPEG decoder (libjpeg-turbo, built from source by the mozjpeg crate) use
#     SIMD; without it the build still works, a little slower at decoding ---
if ! command -v nasm >/dev/null 2>&1 && as_root && command -v apt-get >/dev/null 2>&1; then
    log "installing nasm"
    { apt-get install -y -qq nasm >/dev/null 2>&1 ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nasm >/dev/null 2>&1; }; } ||
        log "WARNING: could not install nasm; JPEG decoding is built without SIMD"
fi

# --- Chromium and ChromeDriver for the console's browser tests, from the distribution, and a
#     Chinese font so that its screenshots show the pages as a reviewer sees them ---
if ! { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 &&
    [[ -d /usr/share/fonts/truetype/wqy ]]; } && as_root && command -v apt-get >/dev/null 2>&1; then
    log "installing chromium, chromium-driver and fonts-wqy-zenhei (once)"
    BROWSER_PACKAGES='chromium chromium-driver fonts-wqy-zenhei'
    # shellcheck disable=SC2086
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $BROWSER_PACKAGES >/dev/null 2>&1 ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $BROWSER_PACKAGES >/dev/null 2>&1; }; } ||
        log "could not install chromium"
fi
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    export HUIKAN_TEST_CHROMEDRIVER="$(command -v chromedriver)" HUIKAN_TEST_CHROMIUM="$(command -v chromium)"
else
    missing "Chromium and ChromeDriver are not available for the console's browser tests"
fi

# --- Enketo's form engine and transformer (enketo-core, enketo-transformer) for the web-form
#     test, from the npm registry at the versions tests/enketo/package-lock.json pins (installed
#     again only when the lock changes), bundled with esbuild into one page with our client ---
build_enketo() {
    command -v npm >/dev/null 2>&1 || return 1
    local dir="$PWD/tests/enketo"
    if ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.huikan-installed" 2>/dev/null; then
        log "installing Enketo from the npm registry into tests/enketo/node_modules"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >"$WORK/npm.log" 2>&1) ||
            { tail -n 20 "$WORK/npm.log" >&2; return 1; }
        cp "$dir/package-lock.json" "$dir/node_modules/.huikan-installed"
    fi
    mkdir -p "$WORK/enketo"
    cp "$dir/index.html" "$WORK/enketo/"
    # libxslt is only for a Node-side preprocess hook the page never uses.
    (cd "$dir" && node_modules/.bin/esbuild client.js --bundle --format=iife --platform=browser \
        --external:libxslt --log-level=error --outfile="$WORK/enketo/enketo.js") || return 1
}
if build_enketo; then
    export HUIKAN_TEST_ENKETO="$WORK/enketo"
else
    missing "could not install and bundle Enketo (tests/enketo, Node.js and npm)"
fi

# --- Real photographs for the copied-photo tests, fetched once into a cache outside the work
#     tree (so a fresh clone reuses it): the sample data of scikit-image (public domain or CC0,
#     see its data README), scikit-learn (china.jpg, flower.jpg) and matplotlib (grace_hopper.jpg)
#     from their wheels on PyPI, and the nature photographs of Debian's mate-backgrounds ---
PHOTO_WHEELS='scikit-image==0.26.0 scikit-learn==1.9.1 matplotlib==3.11.2'
PHOTOS="${XDG_CACHE_HOME:-$HOME/.cache}/huikan/photos-2"
PHOTO_MEMBERS='skimage/data/astronaut.png skimage/data/brick.png skimage/data/camera.png
skimage/data/cell.png skimage/data/chelsea.png skimage/data/clock_motion.png
skimage/data/coffee.png skimage/data/coins.png skimage/data/grass.png skimage/data/gravel.png
skimage/data/hubble_deep_field.jpg skimage/data/ihc.png skimage/data/moon.png
skimage/data/motorcycle_left.png skimage/data/page.png skimage/data/retina.jpg
skimage/data/rocket.jpg skimage/data/text.png sklearn/datasets/images/china.jpg
sklearn/datasets/images/flower.jpg matplotlib/mpl-data/sample_data/grace_hopper.jpg'
MATE_PHOTOS='nature/Aqua.jpg nature/Blinds.jpg nature/Dune.jpg nature/FreshFlower.jpg
nature/Garden.jpg nature/GreenMeadow.jpg nature/LadyBird.jpg nature/RainDrops.jpg nature/Storm.jpg
nature/TwoWings.jpg nature/Wood.jpg nature/YellowFlower.jpg abstract/Elephants.jpg
desktop/GreenTraditional.jpg'
fetch_photos() {
    [[ -f "$PHOTOS/.complete" ]] && return 0
    [[ -n "${HUIKAN_TEST_PYTHON:-}" ]] || return 1
    log "fetching the sample photographs (once, into $PHOTOS)"
    mkdir -p "$WORK/wheels" "$WORK/deb" "$PHOTOS"
    # shellcheck disable=SC2086
    "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary :all: \
        -d "$WORK/wheels" $PHOTO_WHEELS || return 1
    # shellcheck disable=SC2086
    "$VENV/bin/python" - "$PHOTOS" "$WORK"/wheels/*.whl -- $PHOTO_MEMBERS <<'PY' || return 1
import os, sys, zipfile
out = sys.argv[1]
split = sys.argv.index("--")
wheels, members = sys.argv[2:split], set(sys.argv[split + 1:])
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        for name in members.intersection(z.namelist()):
            with open(os.path.join(out, os.path.basename(name)), "wb") as f:
                f.write(z.read(name))
PY
    (cd "$WORK/deb" && { apt-get download -qq mate-backgrounds 2>/dev/null ||
        { as_root && apt-get update -qq && apt-get download -qq mate-backgrounds 2>/dev/null; }; }) ||
        return 1
    dpkg-deb -x "$WORK"/deb/mate-backgrounds_*.deb "$WORK/deb/tree" || return 1
    local photo
    for photo in $MATE_PHOTOS; do
        cp "$WORK/deb/tree/usr/share/backgrounds/mate/$photo" "$PHOTOS/" || return 1
    done
    [[ "$(find "$PHOTOS" -type f | wc -l)" -eq 35 ]] || return 1
    touch "$PHOTOS/.complete"
}
if fetch_photos; then
    export HUIKAN_TEST_PHOTOS="$PHOTOS"
else
    missing "could not fetch the sample photographs into $PHOTOS"
fi

# --- ODK Validate (JavaRosa, the form engine of ODK Collect), from the wheel of pyxform on
#     PyPI, which bundles it, cached outside the work tree; and our stricter checker
#     (tests/xform/XFormCheck.java) compiled against it, for the OpenRosa form tests ---
PYXFORM_PIN='pyxform==4.5.0'
ODK_VALIDATE="${XDG_CACHE_HOME:-$HOME/.cache}/huikan/odk-validate-4.5.0/ODK_Validate.jar"
fetch_odk_validate() {
    [[ -f "$ODK_VALIDATE" ]] && return 0
    [[ -n "${HUIKAN_TEST_PYTHON:-}" ]] || return 1
    log "fetching ODK Validate from $PYXFORM_PIN (once, into $(dirname "$ODK_VALIDATE"))"
    mkdir -p "$WORK/pyxform" "$(dirname "$ODK_VALIDATE")"
    "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary :all: \
        -d "$WORK/pyxform" "$PYXFORM_PIN" || return 1
    "$VENV/bin/python" - "$ODK_VALIDATE" "$WORK"/pyxform/*.whl <<'PY' || return 1
import sys, zipfile
with zipfile.ZipFile(sys.argv[2]) as z:
    name = next(n for n in z.namelist() if n.endswith("/ODK_Validate.jar"))
    with open(sys.argv[1], "wb") as f:
        f.write(z.read(name))
PY
}
if ! command -v javac >/dev/null 2>&1 && as_root && command -v apt-get >/dev/null 2>&1; then
    log "installing a Java compiler (default-jdk-headless) for the XForm checks"
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jdk-headless >/dev/null 2>&1 ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jdk-headless >/dev/null 2>&1; }; } ||
        log "could not install a Java compiler"
fi
if command -v javac >/dev/null 2>&1 && fetch_odk_validate &&
    mkdir -p "$WORK/xform-check" &&
    javac -nowarn -cp "$ODK_VALIDATE" -d "$WORK/xform-check" tests/xform/XFormCheck.java 2>"$WORK/javac.log"; then
    export HUIKAN_TEST_ODK_VALIDATE="$ODK_VALIDATE" HUIKAN_TEST_XFORM_CHECK="$WORK/xform-check"
else
    cat "$WORK/javac.log" >&2 2>/dev/null || true
    missing "ODK Validate and the XForm checker are not available (java, javac, $PYXFORM_PIN)"
fi

# --- S3: a moto server on a free loopback port, killed on exit ---
start_moto() {
    [[ -n "${HUIKAN_TEST_PYTHON:-}" ]] || return 1
    local port
    port="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$WORK/moto.log" 2>&1 &
    MOTO_PID=$!
    # Up when it answers HTTP at all; give up after ~30 s or if it died.
    local _
    for _ in $(seq 1 60); do
        if "$VENV/bin/python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/', timeout=1)" 2>/dev/null; then
            export HUIKAN_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
            # moto checks no signatures; these only have to be the same for server and tests.
            export AWS_ACCESS_KEY_ID=huikan-test AWS_SECRET_ACCESS_KEY=huikan-test-secret
            log "started moto S3 server on 127.0.0.1:$port (pid $MOTO_PID)"
            return 0
        fi
        kill -0 "$MOTO_PID" 2>/dev/null || break
        sleep 0.5
    done
    log "moto did not answer on 127.0.0.1:$port; its log:"
    tail -n 20 "$WORK/moto.log" >&2
    return 1
}
# The fault tests start (and stop) a moto server of their own.
[[ -x "$VENV/bin/moto_server" ]] && export HUIKAN_TEST_MOTO_SERVER="$VENV/bin/moto_server"
if [[ -n "${HUIKAN_TEST_S3_ENDPOINT:-}" ]]; then
    log "using the S3 server at $HUIKAN_TEST_S3_ENDPOINT"
elif ! start_moto; then
    missing "no S3 server (moto) could be started"
fi

# --- PostgreSQL on 127.0.0.1:5432, user postgres with trust auth, database test ---
pg_up() { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; }
pg_sql() { psql -h 127.0.0.1 -p 5432 -U postgres -w -d postgres -Atqc "$1"; }
pg_version() { find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1; }
start_postgres() {
    if ! pg_up; then
        as_root || { log "PostgreSQL is down and only root may install or start it"; return 1; }
        if [[ -z "$(pg_version)" ]]; then
            log "installing PostgreSQL from Debian"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null || return 1
        fi
        local version
        version="$(pg_version)"
        [[ -n "$version" ]] || { log "no PostgreSQL cluster under /etc/postgresql"; return 1; }
        log "starting PostgreSQL $version on 127.0.0.1:5432"
        # Already running (e.g. started by the install) is fine: pg_up below decides.
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
        local _
        for _ in $(seq 1 30); do pg_up && break; sleep 1; done
        pg_up || return 1
    fi
    if ! pg_sql 'SELECT 1' >/dev/null 2>&1; then
        # A fresh Debian cluster wants a password over TCP; the tests connect as postgres
        # without one, so let postgres in from loopback (a test machine's own server).
        local version hba
        version="$(pg_version)"
        hba="/etc/postgresql/$version/main/pg_hba.conf"
        if ! as_root || [[ ! -f "$hba" ]]; then
            log "cannot log in as postgres on 127.0.0.1 and cannot change $hba"
            return 1
        fi
        log "allowing user postgres from 127.0.0.1 without a password ($hba)"
        sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
        pg_ctlcluster --skip-systemctl-redirect "$version" main reload || return 1
        sleep 1
        pg_sql 'SELECT 1' >/dev/null || return 1
    fi
    if [[ -z "$(pg_sql "SELECT 1 FROM pg_database WHERE datname = 'test'")" ]]; then
        log "creating database test"
        pg_sql 'CREATE DATABASE test' || return 1
    fi
    export HUIKAN_TEST_PG_URL=postgres://postgres@127.0.0.1:5432/test
    log "PostgreSQL answers on 127.0.0.1:5432 ($HUIKAN_TEST_PG_URL)"
}
if [[ -n "${HUIKAN_TEST_PG_URL:-}" ]]; then
    log "using PostgreSQL at $HUIKAN_TEST_PG_URL"
elif ! start_postgres; then
    missing "PostgreSQL does not answer on 127.0.0.1:5432"
fi

case "$PROFILE" in
    dev | test) PROFILE_DIR=debug ;;
    release | bench) PROFILE_DIR=release ;;
    *) PROFILE_DIR="$PROFILE" ;; # custom profiles build into a folder of their own name
esac
export PROFILE PROFILE_DIR
