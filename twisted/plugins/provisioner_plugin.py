# Dropin for twistd: `twistd -n provisioner`. Nothing is imported or done here
# beyond naming the module that builds the service (provisioner.tap).
from twisted.application.service import ServiceMaker

provisioner = ServiceMaker(
    "provisioner",
    "provisioner.tap",
    "Network-provisioning appliance: DHCP/PXE, TFTP, boot menus, image multicast.",
    "provisioner",
)
