"""The evaluation loop (pure logic): orders attributed to contacts, funnels, uplift against control groups."""
