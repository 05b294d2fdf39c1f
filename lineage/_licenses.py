"""The SPDX license ids exante recognizes, and the rule for proprietary terms.

A license id must be a listed SPDX id or a ``LicenseRef-<name>`` (SPDX's form
for terms with no SPDX id, such as a site's terms of service). Anything else is
a typo or an unreviewed license, and ingest stops on it.
"""

from __future__ import annotations

import re

SPDX_IDS = frozenset(
    {
        "0BSD", "AGPL-3.0-only", "AGPL-3.0-or-later", "Apache-2.0", "Artistic-2.0",
        "BSD-2-Clause", "BSD-3-Clause", "BSL-1.0", "CC-BY-3.0", "CC-BY-4.0",
        "CC-BY-NC-3.0", "CC-BY-NC-4.0", "CC-BY-NC-ND-4.0", "CC-BY-NC-SA-4.0",
        "CC-BY-ND-4.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "CC-PDDC", "CC0-1.0",
        "CDLA-Permissive-2.0", "CDLA-Sharing-1.0", "EPL-2.0", "EUPL-1.2",
        "GFDL-1.3-only", "GFDL-1.3-or-later", "GPL-2.0-only", "GPL-2.0-or-later",
        "GPL-3.0-only", "GPL-3.0-or-later", "ISC", "LGPL-2.1-only",
        "LGPL-2.1-or-later", "LGPL-3.0-only", "LGPL-3.0-or-later", "MIT",
        "MPL-2.0", "ODC-By-1.0", "ODbL-1.0", "OFL-1.1", "PDDL-1.0", "Unlicense",
        "Zlib",
    }
)  # fmt: skip

_LICENSE_REF = re.compile(r"LicenseRef-[A-Za-z0-9.\-]+")  # fullmatch: "$" passes a newline


def is_known_license(license_id: str) -> bool:
    return license_id in SPDX_IDS or bool(_LICENSE_REF.fullmatch(license_id))
