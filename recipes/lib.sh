# Shared by every recipe's run.sh: option parsing (Kaldi's parse_options.sh style) and stage guards.
# A stage runs when stage <= N <= stop_stage; a finished stage leaves <exp>/.done/<N>.<name> (so each
# experiment dir keeps its own record) and is skipped when run again (delete the marker, or pass
# --force true, to redo it).

force=${force:-false}

# bash reads an executed script while it runs it, so editing run.sh during a long stage made bash
# go on at the old byte offset in the new text; a sourced file is read whole before it runs. So
# the recipe runs again, sourced, from the folder it was started in (with the same $0 and args).
if [ -z "${ASR_RECIPE_SOURCED:-}" ] && [ -n "${OLDPWD:-}" ]; then
  cd "$OLDPWD" && ASR_RECIPE_SOURCED=1 exec bash -c '. "$0" "$@"' "$0" "$@"
fi
unset ASR_RECIPE_SOURCED  # a recipe started from this one protects itself too

# --foo-bar value  sets  foo_bar=value  for any variable the recipe declared before sourcing this.
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) sed -n '2,/^set /p' "$(basename "${BASH_SOURCE[1]:-$0}")" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    --*=*) name=${1%%=*}; name=${name#--}; value=${1#*=}; shift ;;
    --*) name=${1#--}; value=${2:?option $1 needs a value}; shift 2 ;;
    *) echo "$0: unexpected argument '$1' (options are --name value)" >&2; exit 2 ;;
  esac
  name=${name//-/_}
  if ! declare -p "$name" >/dev/null 2>&1; then echo "$0: unknown option --${name//_/-}" >&2; exit 2; fi
  printf -v "$name" '%s' "$value"
done

# stage N NAME: true when stage N should run now.
stage() {
  local n=$1 name=$2 marker="${exp:-exp}/.done/$1.$2"
  [ "$n" -ge "$stage" ] && [ "$n" -le "$stop_stage" ] || return 1
  if [ "$force" != true ] && [ -f "$marker" ]; then
    echo "== stage $n ($name): done already, skipping ($marker)"
    return 1
  fi
  echo "== stage $n ($name): $(date '+%F %T')"
  return 0
}

done_stage() { mkdir -p "${exp:-exp}/.done" && touch "${exp:-exp}/.done/$1.$2"; }

machine() { echo "$(nproc --all) CPU cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(python -c 'import torch;print("CUDA "+torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")'), torch $(python -c 'import torch;print(torch.__version__)')"; }
