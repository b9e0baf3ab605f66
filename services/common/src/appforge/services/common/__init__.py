"""What two or more services truly share: settings, database, bus, clock, server bootstrap."""
