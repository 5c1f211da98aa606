complete -c wh-automatad -l log-format -d 'Log format on stderr (default: text, without timestamps under journald)' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c wh-automatad -l check -d 'Validate the settings and every included file, print every problem, and exit 1 if there is one; else exit 0, after warning about what would stop the daemon on this machine for the user running the check (missing workdir, state_dir not writable, listen address in use)'
complete -c wh-automatad -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wh-automatad -s V -l version -d 'Print version'
