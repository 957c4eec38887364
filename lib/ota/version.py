# The one ordering of versions, for every part of ota that asks "is this
# newer?": the board's manifest check, its app-bundle target, and the
# campaign server on the host (which imports this file), so a server never
# offers what a board would then refuse as older.


def version_key(version):
    # Sort key of a version string, SemVer 2.0 precedence: an optional
    # leading "v", dot-separated numbers compared as numbers ("1.10" > "1.9",
    # "1.2" == "1.2.0"), then an optional "-pre.release" that ranks below the
    # release itself; "+build" metadata is ignored. ValueError otherwise.
    # (find and split only: ESP8266 firmware has no str.partition.)
    v = version[1:] if version[:1] in ("v", "V") else version
    v = v.split("+")[0]
    i = v.find("-")
    nums = []
    for part in (v if i < 0 else v[:i]).split("."):
        if not part.isdigit():
            raise ValueError("bad version %r" % version)
        nums.append(int(part))
    while len(nums) > 1 and nums[-1] == 0:
        nums.pop()
    if i < 0:
        return tuple(nums), (1,)
    ids = []
    for part in v[i + 1:].split("."):
        if not part:
            raise ValueError("bad version %r" % version)
        # numeric identifiers rank below alphanumeric ones
        ids.append((0, int(part), "") if part.isdigit() else (1, 0, part))
    return tuple(nums), (0, tuple(ids))
