#!/usr/bin/env bash
# install_slurm_profile.sh - make `snakemake train --profile slurm` work from the repository root.
#
# Snakemake looks `--profile slurm` up in ./slurm, then ~/.config/snakemake/slurm (the user's profiles, honouring
# $XDG_CONFIG_HOME), then /etc/xdg/snakemake/slurm (the site's). This installs profiles/slurm/ as the user's
# `slurm` profile, by copying it, when none of these exists. An existing profile is never touched (not even one
# an earlier run installed: you may have adapted it); then this says how to use ours by its path instead.
# Idempotent; never fails the set-up (exit 0), it only reports.
#
# Usage: tools/install_slurm_profile.sh        (called by `make install`)
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
src="$repo/profiles/slurm/config.yaml"
user_dir="${XDG_CONFIG_HOME:-$HOME/.config}/snakemake/slurm"
site_dir="$(printf '%s' "${XDG_CONFIG_DIRS:-/etc/xdg}" | cut -d: -f1)/snakemake/slurm"
marker=".installed-from-davs"   # tells a copy of ours from a profile of the user's or the site's
say() { printf 'slurm profile: %s\n' "$*"; }

if [ -e "$user_dir/$marker" ]; then
  if cmp -s "$src" "$user_dir/config.yaml"; then
    say "$user_dir (installed from profiles/slurm) is up to date: \`snakemake train --profile slurm\` uses it"
  else
    say "$user_dir was installed from profiles/slurm but differs from it now (your edits, or a newer"
    say "profiles/slurm): left as it is. Compare: diff $user_dir/config.yaml profiles/slurm/config.yaml"
  fi
  exit 0
fi
for existing in "$repo/slurm" "$user_dir" "$site_dir"; do
  if [ -e "$existing" ]; then
    say "a profile named slurm already exists at $existing: left as it is."
    say "\`snakemake train --profile slurm\` uses that one. To use this project's profile instead, run"
    say "    snakemake train --profile profiles/slurm"
    say "or copy what you need from profiles/slurm/config.yaml into yours (docs/CLUSTER.md)."
    exit 0
  fi
done

if mkdir -p "$user_dir" && cp "$src" "$user_dir/config.yaml" && echo "$repo/profiles/slurm" > "$user_dir/$marker"; then
  say "installed profiles/slurm as $user_dir (you had no slurm profile)."
  say "\`snakemake train --profile slurm\` now submits the jobs to Slurm; adapt it to your cluster: docs/CLUSTER.md"
else
  say "could not write $user_dir; use the profile by its path: snakemake train --profile profiles/slurm"
fi
exit 0
