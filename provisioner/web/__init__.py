"""
web subsystem of provisioner: images and menus over HTTP, and the JSON
API.

  - C{files}: the files (C{FileResource}: HEAD, ranges, the fetch
    callbacks' C{HTTPFetch});
  - C{streaming}: single byte ranges (C{parseRange}, C{ifRangeMatches})
    and the producer that streams a data source (C{SourceProducer});
  - C{api}: the JSON API's read endpoints (C{APIResource});
  - C{hostsapi}: its hosts endpoints: lifecycle reads, callbacks,
    redeploy, adopt (C{HostsEndpoints});
  - C{jsonio}: JSON bodies and answers (C{publicVars});
  - C{root}: C{/api/v1/} or the files (C{RootResource});
  - C{logs}: the log namespaces the moved resources keep
    (C{NamedLogger});
  - C{service}, C{schema}: the C{http} service and its configuration
    section.
"""
