# -*- test-case-name: tests.test_menus -*-
"""
The C{menus} section of the configuration: per-client boot menus rendered
from Jinja2 templates.
"""

from provisioner.config import Key, Section

__all__ = ["SCHEMA"]

SCHEMA = Section("per-client boot menus (iPXE, pxelinux, GRUB) rendered from Jinja2 "
                 "templates", {
    "enabled": Key(False, "bool", "render boot menus as virtual files served by TFTP and HTTP"),
    "templates": Key(None, "path", "an operator templates directory searched before the "
                     "shipped ones (same layout: ipxe/, pxelinux/, grub/)", nullable=True),
    "ipxe": Key(True, "bool", "serve iPXE scripts: boot.ipxe and menus/MAC/boot.ipxe"),
    "pxelinux": Key(True, "bool", "serve pxelinux.cfg/01-MAC, the hex-IP names and "
                    "pxelinux.cfg/default (also below any directory)"),
    "grub": Key(True, "bool", "serve grub.cfg-01-MAC, grub.cfg-HEXIP and grub.cfg (also "
                "below any directory, e.g. grub/)"),
    "http_url": Key(None, "str", "base URL templates use to point clients at the HTTP service "
                    "(e.g. http://198.18.0.1:8080); null derives it from http.address and "
                    "http.port, or from the Host header of an HTTP request", nullable=True),
    "tftp_server": Key(None, "str", "the TFTP server address templates may use; null uses "
                       "tftp.address", nullable=True),
    "cache_size": Key(4096, "int", "rendered menus kept in memory (per client and file); "
                      "dropped whenever templates, the inventory or the images change",
                      minimum=0),
    "poll_interval": Key(2.0, "float", "seconds between checks of the template directories "
                         "when inotify is not available", minimum=0.05, maximum=3600),
    "vars": Key({}, "map", "variables every template sees (as vars.NAME), below the "
                "inventory's defaults"),
})
