"""Pick-to-light on Modbus I/O modules (kind ``modbus_io``): config, driver, simulator."""
