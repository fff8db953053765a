from cluster.widget_notices import quiet_widget_notices

quiet_widget_notices()  # before anything imports Ray
