# Sourced by build-web.sh, test-web.sh and .ci/run (from the repository root): what the
# web scripts share.

# The version of the wasm-bindgen crate in Cargo.lock: wasm-bindgen-cli must match it.
wasm_bindgen_version() {
  awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock
}

# Sets data_dir from the script's arguments ([--data-dir DIR]), else $KILN_DATA, else the
# first of ../shared/data/mnist and data/mnist that holds MNIST's test labels; empty if none.
parse_data_dir() {
  data_dir="${KILN_DATA:-}"
  while [ $# -gt 0 ]; do
    case "$1" in
      --data-dir) data_dir="$2"; shift 2 ;;
      *) echo "usage: $0 [--data-dir DIR]" >&2; exit 2 ;;
    esac
  done
  if [ -z "$data_dir" ]; then
    for d in ../shared/data/mnist data/mnist; do
      if [ -e "$d/t10k-labels-idx1-ubyte.gz" ] || [ -e "$d/t10k-labels-idx1-ubyte" ]; then data_dir="$d"; break; fi
    done
  fi
}
