#!/usr/bin/env python3
"""`meson install --destdir` into a temporary directory: every file a host needs is there (binaries,
units, sysusers and tmpfiles snippets, sample config, man pages), the man pages render without a
warning, and they cover every configuration key and every synodctl command.

usage: install_test.py BUILD_DIR
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile


def fail(message):
    print(f"FAIL {message}")
    sys.exit(1)


def main():
    build = sys.argv[1]
    options = {o["name"]: o["value"] for o in json.loads(subprocess.run(
        ["meson", "introspect", "--buildoptions", build], check=True, capture_output=True,
        text=True).stdout)}
    prefix = options["prefix"]

    def under_prefix(option):
        value = options[option]
        return value if os.path.isabs(value) else os.path.join(prefix, value)

    dest = tempfile.mkdtemp(prefix="synod-install-")
    try:
        p = subprocess.run(["meson", "install", "-C", build, "--destdir", dest, "--no-rebuild",
                            "--quiet"], capture_output=True, text=True)
        if p.returncode != 0:
            fail(f"meson install exited {p.returncode}:\n{p.stdout}{p.stderr}")

        def path(*parts):
            return dest + os.path.join(*parts)

        mandir = under_prefix("mandir")
        expected = {
            "daemon": path(under_prefix("sbindir"), "synod"),
            "synodctl": path(under_prefix("bindir"), "synodctl"),
            "synod-bench": path(under_prefix("bindir"), "synod-bench"),
            "service unit": path(prefix, "lib/systemd/system/synod.service"),
            "socket unit": path(prefix, "lib/systemd/system/synod.socket"),
            "sysusers": path(prefix, "lib/sysusers.d/synod.conf"),
            "tmpfiles": path(prefix, "lib/tmpfiles.d/synod.conf"),
            "sample config": path(under_prefix("sysconfdir"), "synod/synod.yaml"),
            "synod(8)": path(mandir, "man8/synod.8"),
            "synodctl(1)": path(mandir, "man1/synodctl.1"),
            "synod.yaml(5)": path(mandir, "man5/synod.yaml.5"),
        }
        for what, file in expected.items():
            if not os.path.isfile(file):
                fail(f"{what} not installed at {file}")
            print(f"ok   {what}: {file[len(dest):]}")
        for binary in ("daemon", "synodctl", "synod-bench"):
            if not os.access(expected[binary], os.X_OK):
                fail(f"{expected[binary]} is not executable")
        with open(expected["service unit"]) as f:
            unit = f.read()
        exec_start = f"ExecStart={os.path.join(under_prefix('sbindir'), 'synod')} --config"
        if exec_start not in unit:
            fail(f"synod.service does not start the installed daemon ({exec_start})")
        with open(expected["tmpfiles"]) as f:
            if not re.search(r"^d /var/lib/synod 0750 synod synod", f.read(), re.M):
                fail("tmpfiles snippet does not create /var/lib/synod 0750 synod synod")

        pages = {name: open(expected[name]).read()
                 for name in ("synod(8)", "synodctl(1)", "synod.yaml(5)")}
        # Every key the daemon knows (synod --check-config prints them all) is documented.
        # (a copy of the sample with its data_dir in the temporary directory: /var/lib/synod may
        # not be writable by the user running the tests)
        config = os.path.join(dest, "check.yaml")
        with open(expected["sample config"]) as f, open(config, "w") as out:
            out.write(re.sub(r"^data_dir: .*$", f"data_dir: {dest}/data", f.read(), flags=re.M))
        sample = subprocess.run([expected["daemon"], "--check-config", config],
                                capture_output=True, text=True)
        keys = re.findall(r"^([a-z_]+):", sample.stdout, re.M)
        if sample.returncode != 0 or len(keys) < 15:
            fail(f"synod --check-config on the sample config: {sample.returncode}\n"
                 f"{sample.stdout}{sample.stderr}")
        for key in keys:
            if f".B {key}" not in pages["synod.yaml(5)"].replace(".BR ", ".B "):
                fail(f"synod.yaml(5) does not document {key}")
        # Every synodctl command is documented with its exit statuses.
        help_text = subprocess.run([expected["synodctl"], "--help"], capture_output=True,
                                   text=True).stdout
        commands = re.findall(r"^  ([a-z-]+)", help_text.split("Commands:")[1].split("\n\n")[0],
                              re.M)
        if "health" not in commands:
            fail(f"synodctl --help lists no health command: {commands}")
        for command in commands:
            if f".B {command}" not in pages["synodctl(1)"].replace("\\-", "-").replace(".BR ", ".B "):
                fail(f"synodctl(1) does not document {command}")
        for status in ("0", "1", "2", "3", "4"):
            if f".B {status}\n" not in pages["synodctl(1)"]:
                fail(f"synodctl(1) does not document exit status {status}")
        print(f"ok   man pages cover {len(keys)} keys and {len(commands)} commands")

        groff = shutil.which("groff")
        if not groff:
            print("SKIP rendering check: groff is not installed (Debian package groff-base)")
            return
        for name in pages:
            r = subprocess.run([groff, "-man", "-Tutf8", "-z", "-ww", expected[name]],
                               capture_output=True, text=True)
            if r.returncode != 0 or r.stderr.strip():
                fail(f"{name} renders with warnings:\n{r.stderr}")
        print("ok   every man page renders without warnings (groff -man -Tutf8 -z -ww)")
    finally:
        shutil.rmtree(dest, ignore_errors=True)


if __name__ == "__main__":
    main()
