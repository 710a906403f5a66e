"""ctipcap: packet captures (pcap, pcapng) read back as tagged streams."""
