complete -c wh-automata-trigger -l branch -d 'Run for this branch (WH_BRANCH, WH_REF); default: the ref of the entry\'s last job, or the branch its match.branch names (^main$)' -r
complete -c wh-automata-trigger -l tag -d 'Run for this tag (WH_TAG, WH_REF), for entries that run on tags' -r
complete -c wh-automata-trigger -l commit -d 'Run for this commit (WH_AFTER); default: none, and the shipped rules deploy the head of the branch they fetch' -r
complete -c wh-automata-trigger -l payload -d 'Run for a saved delivery: its body, or headers, a blank line and its body' -r -F
complete -c wh-automata-trigger -l provider -d 'The provider of the saved delivery, when its headers or shape do not say' -r
complete -c wh-automata-trigger -l event -d 'The provider\'s event name of the saved delivery (as in its event header), when its headers or shape do not say' -r
complete -c wh-automata-trigger -l limit -d 'How many jobs --jobs lists' -r
complete -c wh-automata-trigger -l log -d 'Print the log of job ID' -r
complete -c wh-automata-trigger -l explain -d 'For a saved delivery: which entries match it, and why the others do not' -r -F
complete -c wh-automata-trigger -l releases -d 'List the releases of ENTRY (jobs that succeeded for a commit), newest first' -r
complete -c wh-automata-trigger -l reason -d 'With --freeze: why (shown by /health, --jobs and the held jobs\' statuses)' -r
complete -c wh-automata-trigger -l remote -d 'Work against the daemon at URL through its job API (no SETTINGS then: the first name is the entry): --jobs, --log [--follow], a run, --rollback, --releases, --freeze, --unfreeze, --wait' -r
complete -c wh-automata-trigger -l token-file -d 'With --remote: the file holding the API token' -r -F
complete -c wh-automata-trigger -l timeout -d 'With --wait: the longest wait (then exit 2 with the job\'s state)' -r
complete -c wh-automata-trigger -l to -d 'With --rollback: the release to go back to, by its commit (or a prefix) or its job id' -r
complete -c wh-automata-trigger -l from -d 'With --explain: the address the delivery came from, so that `allow_from` is applied as the daemon would (a saved delivery does not say)' -r
complete -c wh-automata-trigger -l notify-test -d 'Send a test message to each notification target of ENTRY, and its latest job\'s status to the commit again; print each result (exit 1 if one failed)' -r
complete -c wh-automata-trigger -l dry-run -d 'Show the actions and the environment that would run, and run nothing'
complete -c wh-automata-trigger -l jobs -d 'List the most recent jobs'
complete -c wh-automata-trigger -l follow -d 'With --log: keep printing until the job ends'
complete -c wh-automata-trigger -l rollback -d 'Roll ENTRY back: run it for an earlier release\'s commit (the one before the newest, or --to), with WH_TRIGGER=rollback and its `rollback:` actions when it has them'
complete -c wh-automata-trigger -l freeze -d 'Freeze ENTRY: its deliveries are recorded `held` and run nothing until --unfreeze'
complete -c wh-automata-trigger -l unfreeze -d 'Unfreeze ENTRY: its newest held job runs (the older ones are superseded)'
complete -c wh-automata-trigger -l force -d 'Run a frozen entry all the same'
complete -c wh-automata-trigger -l wait -d 'With --remote: follow the job to its end and exit with its status; with --commit SHA and no --branch or --tag, the job of that commit, however it was started'
complete -c wh-automata-trigger -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wh-automata-trigger -s V -l version -d 'Print version'
