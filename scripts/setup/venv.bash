# Sourced by the setup scripts that need a Python virtualenv (not run on its own: scripts/test
# runs only *.sh). `install_venv VENV REQUIREMENTS WHAT`: a virtualenv at VENV with REQUIREMENTS
# installed; idempotent (skips when the installed requirements file matches); WHAT names the
# test that needs it in messages.
install_venv() {
    local venv=$1 req=$2 what=$3
    local stamp=$venv/.requirements
    if [ -x "$venv/bin/python" ] && cmp -s "$req" "$stamp" 2>/dev/null; then
        echo "$what already installed in $venv"
        return 0
    fi
    if ! command -v python3 >/dev/null; then
        echo "python3 is required for $what (apt-get install python3 python3-venv)" >&2
        return 1
    fi
    if ! python3 -m venv "$venv" 2>/dev/null; then
        if command -v apt-get >/dev/null; then
            echo "installing python3-venv"
            apt-get update -qq && apt-get install -y -qq python3-venv
            python3 -m venv "$venv"
        else
            echo "python3 -m venv failed; install the venv module for python3" >&2
            return 1
        fi
    fi
    echo "installing $req into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
}
