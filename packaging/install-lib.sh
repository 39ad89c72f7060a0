# Shared by packaging/install.sh and packaging/install-flanneld.sh (sourced; POSIX sh plus
# cp/mv/diff/sha256sum, so a busybox image can run it).  The caller defines say() and BUNDLE,
# and removes the files named in $tmp_files on exit (install_traps).

tmp_files=""

sha256() { sha256sum "$1" | cut -d' ' -f1; }

# install_traps: leftovers of an interrupted copy (names in $tmp_files) go on any exit.
install_traps() {
    trap '[ -z "$tmp_files" ] || rm -rf $tmp_files' EXIT
    trap 'exit 1' INT TERM HUP
}

# put <src> <dest> <mode>: copy next to dest, then rename over it (a runtime executing dest
# meanwhile sees the old or the new file, never a partial one)
put() {
    tmp=$(dirname "$2")/.$(basename "$2").new.$$
    tmp_files="$tmp_files $tmp"
    rm -f "$tmp"
    cp "$1" "$tmp"
    chmod "$3" "$tmp"
    mv -f "$tmp" "$2"
}

# swap_bundle <src bundle dir> <dest bundle dir>: install the bundle with two renames (it is
# missing for the instant between them), or leave it when it is already the same.
# (-x: the bundle holds a link to itself, .cni-flannel -> ., for its PyInstaller entry)
swap_bundle() {
    if [ -d "$2" ] && [ -L "$2/$BUNDLE" ] && diff -r -x "$BUNDLE" "$1" "$2" >/dev/null 2>&1; then
        say "$2 is up to date"
        return 0
    fi
    tmp=$2.new.$$
    old=$2.old.$$
    tmp_files="$tmp_files $tmp $old"
    rm -rf "$tmp" "$old"
    cp -R -p "$1" "$tmp"
    if [ -e "$2" ] || [ -L "$2" ]; then mv "$2" "$old"; fi
    mv "$tmp" "$2"
    rm -rf "$old"
    say "installed $2 ($(sed -n 's/^SOURCE=//p' "$2/BUILD"))"
}
