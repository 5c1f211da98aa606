# wh-automata's wrapper on a deploy host, run by OpenSSH as `sh -c WRAPPER wh-automata LOCK`
# (LOCK: the entry's name, with a digest of the settings file's path in front).
# Everything else comes on standard input, never in the command line: a line per item,
#   N <nonce>            the marker of this run's own lines
#   E <NAME> <base64>    a variable of the action environment
#   D <base64>           the directory the actions run in
#   A <base64>           an action (its text, given to sh -c as an argument)
#   P                    the payload follows, base64, to the end of the input
# Values are decoded by base64 and set with export "NAME=value": never read by a shell as code.
# One run of an entry at a time on this host: a lock under the user's runtime directory; a run
# that finds it held stops what an interrupted run left (its process group, recorded here).
set -u
entry=$1
umask 077
base=${XDG_RUNTIME_DIR:-/tmp}
dir="$base/wh-automata-$(id -u)"
mkdir -p "$dir" || exit 90
[ -O "$dir" ] || { echo "wh-automata: $dir is not this user's" >&2; exit 90; }
chmod 700 "$dir"
exec 9>>"$dir/$entry.lock"
# Signal $1 to process group $2 (dash's own kill takes no group: procps's kill, else by /proc).
stop_group() {
  env kill -s "$1" -- "-$2" 2>/dev/null && return
  for stat in /proc/[0-9]*/stat; do
    read -r p _ _ _ g _ <"$stat" 2>/dev/null || continue
    [ "$g" = "$2" ] && kill -s "$1" "$p" 2>/dev/null
  done
}
if ! flock -n 9; then
  old=$(cat "$dir/$entry.pgid" 2>/dev/null)
  case $old in
    '' | *[!0-9]*) ;;
    *)
      echo "wh-automata: stopping what an interrupted run left here (process group $old)" >&2
      stop_group TERM "$old"
      sleep 1
      stop_group KILL "$old"
      ;;
  esac
  flock -w 30 9 || { echo "wh-automata: another run of $entry holds this host" >&2; exit 91; }
fi
# This run's process group, for the next run to stop if this one is cut off.
read -r _ _ _ _ pgid _ </proc/$$/stat 2>/dev/null || pgid=
printf '%s\n' "$pgid" >"$dir/$entry.pgid"
decode() { printf '%s' "$1" | base64 -d && printf x; }
nonce=
workdir=
n=0
while IFS=' ' read -r kind name value; do
  case $kind in
    N) nonce=$name ;;
    E)
      case $name in '' | [0-9]* | *[!A-Za-z0-9_]*) echo "wh-automata: bad variable name" >&2; exit 92 ;; esac
      v=$(decode "$value") || exit 92
      export "$name=${v%x}"
      ;;
    D) v=$(decode "$name") || exit 92; workdir=${v%x} ;;
    A) n=$((n + 1)); printf '%s' "$name" | base64 -d >"$dir/$entry.action$n" || exit 92 ;;
    P) break ;;
    *) echo "wh-automata: bad input" >&2; exit 92 ;;
  esac
done
base64 -d >"$dir/$entry.payload.json" 2>/dev/null || : >"$dir/$entry.payload.json"
export WH_PAYLOAD="$dir/$entry.payload.json"
if [ -n "$workdir" ]; then
  cd "$workdir" || { echo "wh-automata[$nonce] workdir"; exit 93; }
fi
i=1
while [ "$i" -le "$n" ]; do
  cmd=$(cat "$dir/$entry.action$i" && printf x)
  echo "wh-automata[$nonce] start $i"
  sh -c "${cmd%x}" </dev/null 2>&1
  status=$?
  echo "wh-automata[$nonce] exit $i $status"
  [ "$status" -eq 0 ] || exit "$status"
  i=$((i + 1))
done
echo "wh-automata[$nonce] done"
