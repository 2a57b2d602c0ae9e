"""
images subsystem of provisioner: the watched image directory and its
catalogue.

  - C{catalog}: the L{Catalog<provisioner.images.catalog.Catalog>} (what
    the directory holds, changes, opening a file only while it is the one
    hashed, subscribers, when to save);
  - C{entry}: one catalogued image (C{ImageEntry}) and its kind
    (C{classify});
  - C{digest}: the digest of a complete file (C{hashFile}, C{FileBusy});
  - C{scheduler}: when files are hashed (C{HashScheduler}: one hash per
    name, retries, stale results);
  - C{state}: the saved catalogue, C{images-catalog.json};
  - C{resolver}: the C{IFileResolver} that serves catalogued images;
  - C{watch}: inotify and polling watchers;
  - C{service}, C{schema}, C{cli}: the C{images} service, its configuration
    section and C{provisioner images}.
"""
